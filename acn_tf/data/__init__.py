"""The data: where each dataset's files are found and read (sources.py for the named
datasets, and one module a source: fashion_mnist.py, cifar.py, tfds_source.py,
downloads.py, folders.py, over raw_splits.py), and the splits and tf.data input
pipelines a run trains on (pipeline.py).
"""
