package safetensors_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ncsn/ncsn/internal/safetensors"
)

func Example() {
	dir, err := os.MkdirTemp("", "ckpt")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ckpt-100.safetensors")

	f := &safetensors.File{Metadata: map[string]string{"step": "100"}}
	if err := f.AddF32("param/w", []int{2, 2}, []float32{1, 2, 3, 4}); err != nil {
		log.Fatal(err)
	}
	if err := safetensors.WriteFile(path, f); err != nil {
		log.Fatal(err)
	}

	got, err := safetensors.ReadFile(path)
	if errors.Is(err, safetensors.ErrCorrupt) {
		log.Printf("skipping %v", err) // a checkpoint that does not verify is never loaded
		return
	} else if err != nil {
		log.Fatal(err)
	}
	w, shape, err := got.F32("param/w")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Metadata["step"], shape, w)
	// Output: 100 [2 2] [1 2 3 4]
}
