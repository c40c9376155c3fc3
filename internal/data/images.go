package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Images is an 8-bit image set held in one contiguous buffer, channel-first,
// with one label per image. Example scales pixels to [0, 1].
type Images struct {
	c, h, w int
	pix     []byte // Len()·c·h·w bytes
	labels  []byte
}

func (m *Images) Len() int     { return len(m.labels) }
func (m *Images) Shape() []int { return []int{m.c, m.h, m.w} }

// Label is the class of image i as stored in the file.
func (m *Images) Label(i int) int { return int(m.labels[i]) }

func (m *Images) Example(i int, dst []float32) {
	n := m.c * m.h * m.w
	src := m.pix[i*n : (i+1)*n]
	dst = dst[:n]
	for j, v := range src {
		dst[j] = float32(v) / 255
	}
}

// truncate keeps the first n images when n is positive; asking for more
// than the file has is an error, since a silently smaller set is a surprise.
func (m *Images) truncate(n int, what string) error {
	if n <= 0 {
		return nil
	}
	if n > m.Len() {
		return fmt.Errorf("data.%s: %d, but the files hold only %d examples", what, n, m.Len())
	}
	size := m.c * m.h * m.w
	m.pix = slices.Clip(m.pix[:n*size])
	m.labels = slices.Clip(m.labels[:n])
	return nil
}

// checkDir reports a missing or unreadable dataset folder with what to do about it.
func checkDir(name, dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("data: %s: data.path %s does not exist; %s: %w", name, dir, howToGet(name), err)
	}
	if err != nil {
		return fmt.Errorf("data: %s: data.path %s: %w", name, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("data: %s: data.path %s is not a folder", name, dir)
	}
	return nil
}

// findFile returns the first of dir/candidates that exists, or "" if none does.
func findFile(dir string, candidates ...string) (string, error) {
	for _, c := range candidates {
		p := filepath.Join(dir, c)
		_, err := os.Stat(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("data: stat %s: %w", p, err)
		}
	}
	return "", nil
}
