package data

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CIFAR-10 binary format: records of one label byte then 32×32 red, green
// and blue planes.
const (
	cifarSide    = 32
	cifarPixels  = 3 * cifarSide * cifarSide
	cifarRecord  = 1 + cifarPixels
	cifarClasses = 10
	cifarSubdir  = "cifar-10-batches-bin" // what the tarball extracts to
)

var (
	cifarTrainFiles = []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
	cifarTestFiles  = []string{"test_batch.bin"}
)

// cifarRecords is the number of records in a batch file of size bytes.
func cifarRecords(size int64) (int, error) {
	if size <= 0 {
		return 0, fmt.Errorf("empty, want %d-byte records", cifarRecord)
	}
	if size%cifarRecord != 0 {
		return 0, fmt.Errorf("size %d is not a whole number of %d-byte records", size, cifarRecord)
	}
	return int(size / cifarRecord), nil
}

// decodeCIFAR reads len(labels) records from r into labels and pix
// (len(labels)·3072 bytes, already channel-first as stored).
func decodeCIFAR(r io.Reader, pix, labels []byte) error {
	for i := range labels {
		if _, err := io.ReadFull(r, labels[i:i+1]); err != nil {
			return fmt.Errorf("record %d: %w", i, noEOF(err))
		}
		if labels[i] >= cifarClasses {
			return fmt.Errorf("record %d: label %d, want 0..%d", i, labels[i], cifarClasses-1)
		}
		if _, err := io.ReadFull(r, pix[i*cifarPixels:(i+1)*cifarPixels]); err != nil {
			return fmt.Errorf("record %d: %w", i, noEOF(err))
		}
	}
	return nil
}

// readCIFARFiles loads the given batch files into one contiguous set. The
// sizes are taken from the file system first so the buffer is allocated once.
func readCIFARFiles(paths []string) (*Images, error) {
	counts := make([]int, len(paths))
	total := 0
	for i, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		n, err := cifarRecords(st.Size())
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", p, err)
		}
		counts[i] = n
		total += n
	}
	m := &Images{c: 3, h: cifarSide, w: cifarSide, pix: make([]byte, total*cifarPixels), labels: make([]byte, total)}
	off := 0
	for i, p := range paths {
		if err := readCIFARFile(p, m.pix[off*cifarPixels:(off+counts[i])*cifarPixels], m.labels[off:off+counts[i]]); err != nil {
			return nil, err
		}
		off += counts[i]
	}
	return m, nil
}

func readCIFARFile(path string, pix, labels []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	if err := decodeCIFAR(br, pix, labels); err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	// The file may have changed since it was measured.
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("data: %s: changed while being read", path)
	}
	return nil
}

// cifarDir is data.path or its cifar-10-batches-bin subfolder, whichever
// holds the first training batch.
func cifarDir(root string) (string, error) {
	for _, dir := range []string{root, filepath.Join(root, cifarSubdir)} {
		p, err := findFile(dir, cifarTrainFiles[0])
		if err != nil {
			return "", err
		}
		if p != "" {
			return dir, nil
		}
	}
	return "", fmt.Errorf("data: %s: no %s in %s or %s; %s", NameCIFAR10, cifarTrainFiles[0],
		root, filepath.Join(root, cifarSubdir), howToGet(NameCIFAR10))
}

// cifarPaths returns dir/names, or an error naming the first missing one. If
// optional and none exists, it returns nil.
func cifarPaths(dir string, names []string, optional bool) ([]string, error) {
	var paths, missing []string
	for _, n := range names {
		p, err := findFile(dir, n)
		if err != nil {
			return nil, err
		}
		if p == "" {
			missing = append(missing, n)
		} else {
			paths = append(paths, p)
		}
	}
	if len(missing) == 0 || (optional && len(paths) == 0) {
		return paths, nil
	}
	return nil, fmt.Errorf("data: %s: %s missing %v; %s", NameCIFAR10, dir, missing, howToGet(NameCIFAR10))
}

func openCIFAR(cfg Config) (train, test *Images, err error) {
	if err := checkDir(cfg.Name, cfg.Path); err != nil {
		return nil, nil, err
	}
	dir, err := cifarDir(cfg.Path)
	if err != nil {
		return nil, nil, err
	}
	trainPaths, err := cifarPaths(dir, cifarTrainFiles, false)
	if err != nil {
		return nil, nil, err
	}
	testPaths, err := cifarPaths(dir, cifarTestFiles, true)
	if err != nil {
		return nil, nil, err
	}
	if train, err = readCIFARFiles(trainPaths); err != nil {
		return nil, nil, err
	}
	if err := train.truncate(cfg.TrainSize, "train_size"); err != nil {
		return nil, nil, err
	}
	if len(testPaths) > 0 {
		if test, err = readCIFARFiles(testPaths); err != nil {
			return nil, nil, err
		}
		if err := test.truncate(cfg.TestSize, "test_size"); err != nil {
			return nil, nil, err
		}
	}
	return train, test, nil
}
