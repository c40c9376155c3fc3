package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
)

// idxUbyte is the IDX element type of unsigned bytes, the only one MNIST uses.
const idxUbyte = 0x08

// maxDeflateRatio bounds how much a gzip file can expand (deflate peaks near
// 1032:1), so a gzip header cannot make us allocate more than its input could
// ever decode to.
const maxDeflateRatio = 1100

// decodeIDX reads an IDX stream of unsigned bytes with ndims dimensions. The
// header's claim is checked against limit, the most bytes the stream can hold,
// before anything is allocated, and the stream must end exactly where the
// header says.
func decodeIDX(r io.Reader, ndims int, limit int64) (dims []int, data []byte, err error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, nil, fmt.Errorf("read header: %w", noEOF(err))
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, nil, fmt.Errorf("bad magic % x, not an IDX file", magic)
	}
	if magic[2] != idxUbyte {
		return nil, nil, fmt.Errorf("element type 0x%02x, want 0x%02x (unsigned byte)", magic[2], idxUbyte)
	}
	if int(magic[3]) != ndims {
		return nil, nil, fmt.Errorf("%d dimensions, want %d", magic[3], ndims)
	}
	raw := make([]byte, 4*ndims)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, nil, fmt.Errorf("read dimensions: %w", noEOF(err))
	}
	room := limit - int64(len(magic)+len(raw))
	total := uint64(1)
	dims = make([]int, ndims)
	for i := range dims {
		d := binary.BigEndian.Uint32(raw[4*i:])
		if d == 0 {
			return nil, nil, fmt.Errorf("dimension %d is 0", i)
		}
		hi, lo := bits.Mul64(total, uint64(d))
		if hi != 0 {
			return nil, nil, fmt.Errorf("header claims dimensions %v, more than 2^64 bytes", dimsOf(raw))
		}
		total = lo
		dims[i] = int(d)
	}
	// Checked before allocating: the header alone must not decide how much memory we take.
	if room < 0 || total > uint64(room) {
		return nil, nil, fmt.Errorf("header %v claims %d bytes of data, but the file has room for at most %d (truncated, or a wrong header)",
			dims, total, max(room, 0))
	}
	data, err = readN(r, int(total), preallocLimit)
	if err != nil {
		return nil, nil, fmt.Errorf("truncated: header %v claims %d bytes of data, found %d: %w", dims, total, len(data), noEOF(err))
	}
	// Reading past the end also makes gzip verify its checksum.
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return nil, nil, fmt.Errorf("trailing data after the %d bytes header %v claims", total, dims)
	case !errors.Is(err, io.EOF):
		return nil, nil, fmt.Errorf("after data: %w", err)
	}
	return dims, data, nil
}

// preallocLimit is how much of a header's claim is allocated before the data
// arrives. The limit check still lets a small gzip file claim far more than it
// holds (deflate expands up to 1000×); beyond this the buffer grows only as
// fast as real bytes come in.
const preallocLimit = 64 << 20

// readN reads exactly n bytes into one buffer, allocating at most prealloc
// bytes up front, and returns what it got on error.
func readN(r io.Reader, n, prealloc int) ([]byte, error) {
	buf := make([]byte, 0, min(n, max(prealloc, 1)))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		k, err := io.ReadFull(r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+k]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

func dimsOf(raw []byte) []uint32 {
	d := make([]uint32, len(raw)/4)
	for i := range d {
		d[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	return d
}

// noEOF turns a bare EOF inside a structure into ErrUnexpectedEOF: the file
// ended early, it was not empty by design.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readIDXFile decodes one IDX file, gzip-compressed or raw (told apart by
// the gzip magic, not the name).
func readIDXFile(path string, ndims int) ([]int, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("data: stat %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	r, limit, err := maybeGunzip(br, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("data: %s: %w", path, err)
	}
	dims, buf, err := decodeIDX(r, ndims, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %s: %w", path, err)
	}
	return dims, buf, nil
}

// maybeGunzip returns a reader of the decoded stream and a bound on its length.
func maybeGunzip(br *bufio.Reader, size int64) (io.Reader, int64, error) {
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	if !bytes.Equal(head, []byte{0x1f, 0x8b}) {
		return br, size, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, 0, fmt.Errorf("gzip: %w", noEOF(err))
	}
	return zr, size*maxDeflateRatio + 1024, nil
}

// idxNames are the file names tried for each part, in order: the canonical
// names first, then the dotted variant some mirrors use.
func idxNames(prefix, kind string) []string {
	sub := "idx3"
	if kind == "labels" {
		sub = "idx1"
	}
	base := prefix + "-" + kind + "-" + sub + "-ubyte"
	dotted := prefix + "-" + kind + "." + sub + "-ubyte"
	return []string{base + ".gz", base, dotted + ".gz", dotted}
}

// readIDXSplit loads prefix-images and prefix-labels (prefix "train" or
// "t10k") from dir. Missing both is reported as (nil, nil): the caller decides
// whether that split is optional.
func readIDXSplit(name, dir, prefix string) (*Images, error) {
	imgPath, err := findFile(dir, idxNames(prefix, "images")...)
	if err != nil {
		return nil, err
	}
	lblPath, err := findFile(dir, idxNames(prefix, "labels")...)
	if err != nil {
		return nil, err
	}
	switch {
	case imgPath == "" && lblPath == "":
		return nil, nil
	case imgPath == "":
		return nil, fmt.Errorf("data: %s: %s has %s but no %s-images-idx3-ubyte[.gz]; %s",
			name, dir, lblPath, prefix, howToGet(name))
	case lblPath == "":
		return nil, fmt.Errorf("data: %s: %s has %s but no %s-labels-idx1-ubyte[.gz]; %s",
			name, dir, imgPath, prefix, howToGet(name))
	}
	dims, pix, err := readIDXFile(imgPath, 3)
	if err != nil {
		return nil, err
	}
	ldims, labels, err := readIDXFile(lblPath, 1)
	if err != nil {
		return nil, err
	}
	if ldims[0] != dims[0] {
		return nil, fmt.Errorf("data: %s has %d labels but %s has %d images", lblPath, ldims[0], imgPath, dims[0])
	}
	return &Images{c: 1, h: dims[1], w: dims[2], pix: pix, labels: labels}, nil
}

// openMNIST loads mnist or fashion-mnist (same format) from cfg.Path.
func openMNIST(cfg Config) (train, test *Images, err error) {
	if err := checkDir(cfg.Name, cfg.Path); err != nil {
		return nil, nil, err
	}
	train, err = readIDXSplit(cfg.Name, cfg.Path, "train")
	if err != nil {
		return nil, nil, err
	}
	if train == nil {
		return nil, nil, fmt.Errorf("data: %s: no train-images-idx3-ubyte[.gz] in %s; %s",
			cfg.Name, cfg.Path, howToGet(cfg.Name))
	}
	test, err = readIDXSplit(cfg.Name, cfg.Path, "t10k")
	if err != nil {
		return nil, nil, err
	}
	if test != nil && (test.h != train.h || test.w != train.w) {
		return nil, nil, fmt.Errorf("data: %s: in %s, test images are %d×%d but train images %d×%d",
			cfg.Name, cfg.Path, test.h, test.w, train.h, train.w)
	}
	if err := train.truncate(cfg.TrainSize, "train_size"); err != nil {
		return nil, nil, err
	}
	if test != nil {
		if err := test.truncate(cfg.TestSize, "test_size"); err != nil {
			return nil, nil, err
		}
	}
	return train, test, nil
}
