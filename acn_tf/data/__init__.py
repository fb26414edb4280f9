"""The data: where each dataset's files are found and read (sources.py), and the
splits and tf.data input pipelines a run trains on (pipeline.py).
"""
