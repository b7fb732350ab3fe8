"""The on-disk cache of a split: decoded images (and masks) in ArrayRecord files, read at random.

Every data set, the synthetic one included, is decoded and resized once into a cached split;
training and evaluation then read only the rows of each batch (`RecordArray[index]`), so a
host's memory does not grow with the number of images. One cached split is a folder
`<name>-<key>/` (the key covers everything the content depends on):

    images-<k>.array_record  one record per image, `(S, S, 3)` uint8: raw bytes, or JPEG (`codec`),
                             in shards of `SHARD_SIZE` records
    masks-<k>.array_record   optional: one PNG per image, the mask at the original image's
                             resolution `(H, W)` uint8 (0, 1, or 255 = ignore)
    meta.npz              labels `(N,)`, boxes `(N, K, 4)` float64 in the original image's pixels
                          (absent without boxes), the original `(width, height)` `(N, 2)`, image ids,
                          the samples skipped while building, the image size and codec

Ground truth stays in the original image's pixels: every evaluation protocol scales it once to
the size it evaluates at (`dataset.crop_protocol_boxes`, `wsolevaluation.resize_boxes`), never
from an already resized copy (resizing twice moves box edges by a pixel and mask pixels by one).
Masks are kept at their original resolution, PNG-encoded (variable size; a binary mask is a
few hundred bytes to a few KB), rather than as a second fixed-size copy per protocol: any size
a protocol needs (the cache size of the paper's crop, wsolevaluation's 224) is then one
nearest-neighbour resize away from the original, and the original can be written out as it is.

ArrayRecord is the random-access format of Grain and TFDS; with `group_size:1` every record is
its own chunk, so reading one image reads nothing else. The folder is built
under a temporary name and renamed into place when complete: a folder with the final name is
always whole, and an interrupted build leaves only a temporary folder, removed by the next build.
"""

from __future__ import annotations

import array
import copy
import glob
import os
import shutil
import socket
import threading
from typing import Callable, Optional

import cv2
import numpy as np

from wsol_jax.annotations import PAD_BOX
from wsol_jax.data.split import Split
from wsol_jax.errors import DataError

# Random access: one record per chunk. Uncompressed: decoded pixels gain little from a general
# compressor (5 % on the synthetic images) and reading was 2x faster than zstd here (36k vs 18k
# 32 px images/s on one core); the `jpeg` codec is the way to make a cache small.
WRITER_OPTIONS = 'group_size:1,uncompressed'
# random access: no read-ahead, no reader threads of its own (Grain's threads read in parallel; 1.4x faster here)
READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'
CODECS = ('raw', 'jpeg')
JPEG_QUALITY = 95
IMAGES, MASKS, META = 'images', 'masks', 'meta.npz'  # images-00000.array_record, ...
SHARD_SIZE = 4096  # records per file (see _ShardedWriter)


def encode_image(image: np.ndarray, codec: str) -> bytes:
    """`(S, S, 3)` uint8 RGB -> the bytes of one record."""
    if codec == 'raw':
        return np.ascontiguousarray(image, np.uint8).tobytes()
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f'cannot JPEG-encode an image of shape {image.shape}')
    return buf.tobytes()


def decode_record(data: bytes, item_shape: tuple[int, ...], codec: str) -> np.ndarray:
    """The bytes of one record -> `item_shape` uint8 (RGB for images)."""
    if codec == 'raw':
        return np.frombuffer(data, np.uint8).reshape(item_shape)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def shard_path(folder: str, stem: str, shard: int) -> str:
    return os.path.join(folder, f'{stem}-{shard:05d}.array_record')


def encode_mask(mask: np.ndarray) -> bytes:
    """`(H, W)` uint8 mask -> PNG bytes (lossless: the values 0, 1 and 255 survive)."""
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(mask, np.uint8))
    if not ok:
        raise ValueError(f'cannot PNG-encode a mask of shape {mask.shape}')
    return buf.tobytes()


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> the `(H, W)` uint8 mask."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


class _Records:
    """`N` records in ArrayRecord shards `<folder>/<stem>-<k>.array_record` of `shard_size`
    records each, read at random (`rows`: a view of some of them). Pickles as its paths, so
    worker processes open their own readers."""

    def __init__(
        self, folder: str, stem: str, num_records: int, shard_size: int = 0, rows: Optional[np.ndarray] = None
    ):
        self.folder, self.stem, self.num_records = folder, stem, int(num_records)
        self.shard_size = int(shard_size) or max(1, self.num_records)
        self._rows = None if rows is None else np.asarray(rows, np.int64)
        self._local = threading.local()

    def _reader(self, shard: int):
        """This thread's reader of one shard (Grain reads batches in several threads)."""
        readers = self._local.__dict__.setdefault('readers', {})
        if shard not in readers:
            from array_record.python.array_record_module import ArrayRecordReader

            path = shard_path(self.folder, self.stem, shard)
            if not os.path.exists(path):
                raise DataError(
                    f'the record cache file {path} is gone; delete the folder {self.folder} and run again to rebuild it'
                )
            readers[shard] = ArrayRecordReader(path, READER_OPTIONS)
        return readers[shard]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != '_local'}

    def __setstate__(self, state):
        self.__dict__.update(state, _local=threading.local())

    def __len__(self) -> int:
        return self.num_records if self._rows is None else len(self._rows)

    def _positions(self, index) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            return np.arange(*index.indices(n))
        p = np.asarray(index)
        if p.size == 0:  # [] is float64 to numpy
            p = p.astype(np.int64)
        if p.dtype == bool:
            if p.shape != (n,):
                raise IndexError(f'a boolean index must have shape ({n},), got {p.shape}')
            p = np.flatnonzero(p)
        elif not np.issubdtype(p.dtype, np.integer):
            raise IndexError(f'only integers, slices and integer or boolean arrays are valid indices, got {p.dtype}')
        p = np.where(p < 0, p + n, p).astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= n):
            raise IndexError(f'index out of range for {n} records in {self.folder}')
        return p

    def _read(self, positions: np.ndarray) -> list[bytes]:
        """The records at `positions` (flat, of this view), in that order."""
        rows = positions if self._rows is None else self._rows[positions]
        out: list = [None] * len(rows)
        shards, offsets = np.divmod(rows, self.shard_size)
        for shard in np.unique(shards):
            at = np.flatnonzero(shards == shard)
            for i, data in zip(at, self._reader(int(shard)).read(offsets[at].tolist())):
                out[i] = data
        return out

    def subset(self, index):
        """A view of the rows `index` (nothing is read)."""
        positions = self._positions(index).ravel()
        view = copy.copy(self)
        view._rows = positions if self._rows is None else self._rows[positions]
        view._local = threading.local()
        return view


class RecordArray(_Records):
    """A read-only array of `N` items of `item_shape` uint8 (raw bytes, or JPEG: `codec`).

    Indexes like a numpy array along the first axis (an int, a slice, an integer or boolean
    array of any shape: `a[idx]` has shape `idx.shape + item_shape`) and reads only those
    records. `np.asarray(a)` reads them all. `subset` makes a view of some rows."""

    def __init__(
        self,
        folder: str,
        stem: str,
        num_records: int,
        item_shape: tuple[int, ...],
        codec: str = 'raw',
        shard_size: int = 0,
        rows: Optional[np.ndarray] = None,
    ):
        if codec not in CODECS:
            raise ValueError(f'codec must be one of {CODECS}, got {codec!r}')
        super().__init__(folder, stem, num_records, shard_size, rows)
        self.item_shape, self.codec = tuple(item_shape), codec

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),) + self.item_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    dtype = np.dtype(np.uint8)

    def __getitem__(self, index) -> np.ndarray:
        positions = self._positions(index)
        out = np.empty((positions.size,) + self.item_shape, np.uint8)
        for i, data in enumerate(self._read(positions.ravel())):
            out[i] = decode_record(data, self.item_shape, self.codec)
        return out.reshape(positions.shape + self.item_shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class MaskArray(_Records):
    """`N` masks at their original images' resolutions (sizes differ), PNG records.

    `a[i]` is mask `i`, `(H_i, W_i)` uint8 (1 = object, 255 = ignored); any other index (a
    slice, an integer or boolean array) gives a list of masks. Only those records are read.
    `dataset.resize_masks` brings them to the size a protocol evaluates at."""

    def __getitem__(self, index):
        positions = self._positions(index)
        masks = [decode_mask(data) for data in self._read(positions.ravel())]
        return masks[0] if positions.ndim == 0 else masks


class _ShardedWriter:
    """Records into shards of `SHARD_SIZE`: an ArrayRecord writer keeps an index entry per
    record in memory until it closes (about 370 bytes each here), so one file per split would
    grow with the split; a closed shard frees it."""

    def __init__(self, folder: str, stem: str):
        self.folder, self.stem, self.count, self._writer = folder, stem, 0, None

    def write(self, data: bytes) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        if self.count % SHARD_SIZE == 0:
            self.close()
            self._writer = ArrayRecordWriter(
                shard_path(self.folder, self.stem, self.count // SHARD_SIZE), WRITER_OPTIONS
            )
        self._writer.write(data)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def remove(self) -> None:
        self.close()
        for shard in range((self.count + SHARD_SIZE - 1) // SHARD_SIZE):
            os.remove(shard_path(self.folder, self.stem, shard))


class SplitWriter:
    """Writes one cached split sample by sample into `folder` (a temporary folder: `cached`
    moves it to its final name). Memory stays constant: images and masks go to disk as they
    come, and the per-sample metadata is kept compactly (typed arrays, not objects)."""

    def __init__(self, folder: str, size: int, codec: str = 'raw'):
        if codec not in CODECS:
            raise ValueError(f'config.data.cache_codec must be one of {CODECS}, got {codec!r}')
        os.makedirs(folder)
        self.folder, self.size, self.codec = folder, size, codec
        self._images, self._masks = _ShardedWriter(folder, IMAGES), _ShardedWriter(folder, MASKS)
        self.labels, self.box_counts, self.box_values = array.array('i'), array.array('i'), array.array('d')
        self.sizes = array.array('i')
        self.names: list[str] = []
        self._with_mask = 0

    def add(
        self,
        image: np.ndarray,
        label: int,
        name: str,
        boxes: Optional[np.ndarray] = None,
        mask: Optional[np.ndarray] = None,
        original_size: Optional[tuple[int, int]] = None,
    ) -> None:
        """One sample: `image` `(S, S, 3)` uint8 (resized to the cache size), `name` its image id,
        and its ground truth in the original image's pixels: `boxes` `(K, 4)` float
        `[x0, y0, x1, y1]`, `mask` `(H, W)` uint8 and `original_size` `(W, H)` (default: `(S, S)`,
        an image made at the cache size)."""
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(
                f'{name}: expected a ({self.size}, {self.size}, 3) uint8 image, got {image.shape} {image.dtype}'
            )
        width, height = original_size or (self.size, self.size)
        if mask is not None and mask.shape != (height, width):
            raise ValueError(
                f'{name}: the mask is {mask.shape[1]}x{mask.shape[0]} but the original image is {width}x{height}'
            )
        self._images.write(encode_image(image, self.codec))
        self._with_mask += mask is not None
        self._masks.write(b'' if mask is None else encode_mask(mask))
        self.labels.append(int(label))
        b = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
        self.box_counts.append(len(b))
        self.box_values.extend(b.ravel().tolist())
        self.sizes.extend((int(width), int(height)))
        self.names.append(str(name))

    def __len__(self) -> int:
        return len(self.labels)

    def close(self, skipped: list[str] = ()) -> None:
        """Finish the files; masks are kept only if every sample had one, boxes if any had."""
        self._images.close()
        self._masks.close()
        if self._with_mask != len(self):
            self._masks.remove()
        meta = {
            'labels': np.asarray(self.labels, np.int32),
            'names': np.asarray(self.names, dtype=str),
            'sizes': np.asarray(self.sizes, np.int32).reshape(-1, 2),
            'skipped': np.asarray(list(skipped), dtype=str),
            'size': np.int64(self.size),
            'codec': np.asarray(self.codec),
            'shard_size': np.int64(SHARD_SIZE),
        }
        counts = np.asarray(self.box_counts, np.int64)
        if counts.any():
            padded = np.full((len(self), counts.max(), 4), PAD_BOX, np.float64)
            values = np.asarray(self.box_values, np.float64).reshape(-1, 4)
            rows = np.repeat(np.arange(len(self)), counts)
            slots = np.arange(len(values)) - np.repeat(np.cumsum(counts) - counts, counts)
            padded[rows, slots] = values
            meta['boxes'] = padded
        np.savez(os.path.join(self.folder, META), **meta)

    def abort(self) -> None:
        for writer in (self._images, self._masks):
            try:
                writer.close()
            except Exception:  # already closed, or the error we are cleaning up after
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def open_split(folder: str):
    """A cached split folder -> `Split` whose images (and masks) are read from disk on demand."""
    with np.load(os.path.join(folder, META), allow_pickle=False) as z:
        labels, names, size, codec = z['labels'], [str(s) for s in z['names']], int(z['size']), str(z['codec'])
        shard_size, sizes = int(z['shard_size']), z['sizes']
        boxes = z['boxes'] if 'boxes' in z else None
        skipped = list(z['skipped'])
    n = len(labels)
    images = RecordArray(folder, IMAGES, n, (size, size, 3), codec, shard_size)
    has_masks = os.path.exists(shard_path(folder, MASKS, 0))
    masks = MaskArray(folder, MASKS, n, shard_size) if has_masks else None
    if skipped:  # a cached split still says that it lacks samples
        print(
            f'[data] {os.path.basename(folder)}: {len(skipped)} samples were skipped when it was built '
            f'(first: {skipped[0]})'
        )
    return Split(images, labels, boxes, masks, names, sizes)


def _tmp_prefix(folder: str) -> str:
    return f'{folder}.tmp-{socket.gethostname()}-'


def _remove_stale(folder: str) -> None:
    """Temporary folders of this host's earlier builds of `folder` whose process is gone."""
    prefix = _tmp_prefix(folder)
    for tmp in glob.glob(glob.escape(prefix) + '*'):
        pid = tmp[len(prefix) :]
        if pid.isdigit() and not os.path.exists(f'/proc/{pid}'):
            shutil.rmtree(tmp, ignore_errors=True)


def cached(folder: str, size: int, build: Callable[[SplitWriter], list[str]], codec: str = 'raw'):
    """The split cached in `folder`, built first if absent: `build(writer)` adds every sample
    and returns the reasons of the skipped ones. Safe against interruption (the folder appears
    only when whole) and against two processes building it at once (the first rename wins)."""
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, META)):
        raise DataError(
            f'{folder} is not a complete record cache (no {META}; not written by this version?); '
            'delete it and run again to rebuild it'
        )
    if not os.path.exists(os.path.join(folder, META)):
        os.makedirs(os.path.dirname(folder) or '.', exist_ok=True)
        _remove_stale(folder)
        tmp = _tmp_prefix(folder) + str(os.getpid())
        shutil.rmtree(tmp, ignore_errors=True)
        writer = SplitWriter(tmp, size, codec)
        try:
            skipped = build(writer)
            writer.close(skipped)
        except BaseException:
            writer.abort()
            raise
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.exists(os.path.join(folder, META)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same split first
    return open_split(folder)
