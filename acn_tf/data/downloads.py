"""The probe of a tfds download's hosts: offline, resolving a host fails at once,
whereas tfds' own download retries take minutes to give up; and the download
itself, probed first."""

import socket
import urllib.parse
from typing import List

from acn_tf.data import raw_splits

# The hosts tfds downloads each named dataset from. Other tfds datasets: the hosts
# of the URLs their builder lists (url_infos).
TFDS_DOWNLOAD_HOSTS = {
    "cifar10": "www.cs.toronto.edu",
    "cifar100": "www.cs.toronto.edu",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
}


def download_hosts(name: str) -> List[str]:
  """TFDS_DOWNLOAD_HOSTS, else the hosts of the tfds builder's checksummed URLs."""
  if name in TFDS_DOWNLOAD_HOSTS:
    return [TFDS_DOWNLOAD_HOSTS[name]]
  if name in raw_splits.DATASET_SPECS:  # digits: a named dataset without a download.
    return []
  try:
    import tensorflow_datasets as tfds
    urls = tfds.builder_cls(name).url_infos or {}
  except Exception:  # Not a tfds builder, or one without a checksums file.
    return []
  return sorted({urllib.parse.urlparse(url).hostname for url in urls} - {None, ""})


def check_download_host(name: str) -> None:
  """Raises ConnectionError quickly when a download host of `name` cannot be resolved."""
  for host in download_hosts(name):
    try:
      socket.getaddrinfo(host, 443)
    except OSError as error:
      raise ConnectionError(f"cannot resolve {host} (no internet?): {error}") from None


def download_and_prepare(builder) -> None:
  """tfds' download of `builder`, once its hosts resolve."""
  check_download_host(builder.name)
  builder.download_and_prepare()
