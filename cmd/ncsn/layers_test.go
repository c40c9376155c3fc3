package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// layers is the import table of ../shared/DESIGN.md and the README, lowest first: a
// package may import packages of lower layers, and packages of its own layer only under the
// same top-level folder (internal leaves among themselves, coordinator and its
// subpackages, ...), so model and allreduce, or worker and coordinator, never meet.
// The longest matching prefix places a package; a package no row places fails the test,
// so a new package must be given its layer here and in the README.
var layers = []struct {
	layer    int
	prefixes []string
}{
	{1, []string{"proto/", "internal/"}},
	{2, []string{"model", "allreduce"}},
	{3, []string{"model/config", "model/samples"}},
	{4, []string{"worker", "coordinator"}},
	{5, []string{"cmd/ncsn/internal/"}},
	{6, []string{"cmd/ncsn"}},
}

// onlyIn names external modules that one package owns.
var onlyIn = map[string]string{
	"gorgonia.org/": "model",
}

const module = "github.com/ncsn/ncsn"

func layerOf(pkg string) (int, bool) {
	best, layer := -1, 0
	for _, row := range layers {
		for _, p := range row.prefixes {
			match := pkg == p || strings.HasPrefix(pkg, strings.TrimSuffix(p, "/")+"/")
			if strings.HasSuffix(p, "/") {
				match = strings.HasPrefix(pkg, p)
			}
			if match && len(p) > best {
				best, layer = len(p), row.layer
			}
		}
	}
	return layer, best >= 0
}

func topFolder(pkg string) string { return strings.SplitN(pkg, "/", 2)[0] }

// TestLayers parses every non-test Go file of the module and checks its imports against
// the table; it needs no go command, so it runs wherever the tests do.
func TestLayers(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	imports := map[string]map[string]bool{} // package → imports (module-relative or external)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		for _, s := range f.Imports {
			p, _ := strconv.Unquote(s.Path.Value)
			imports[pkg][p] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 10 {
		t.Fatalf("found only %d packages under %s", len(imports), root)
	}
	pkgs := make([]string, 0, len(imports))
	for p := range imports {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		lp, ok := layerOf(pkg)
		if !ok {
			t.Errorf("%s: no layer in the table; place it in layers_test.go and the README", pkg)
			continue
		}
		for imp := range imports[pkg] {
			for ext, owner := range onlyIn {
				if strings.HasPrefix(imp, ext) && pkg != owner {
					t.Errorf("%s imports %s, which only %s may import", pkg, imp, owner)
				}
			}
			rel, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			li, ok := layerOf(rel)
			switch {
			case !ok:
				t.Errorf("%s imports %s, which has no layer", pkg, rel)
			case li > lp:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports run downwards only", pkg, lp, rel, li)
			case li == lp && topFolder(rel) != topFolder(pkg):
				t.Errorf("%s imports %s: both are layer %d and must not meet", pkg, rel, lp)
			}
		}
	}
}

// TestLayerTable checks the table itself on cases that must hold.
func TestLayerTable(t *testing.T) {
	for _, tc := range []struct {
		pkg   string
		layer int
	}{
		{"internal/gemm", 1}, {"proto/ringpb", 1}, {"model", 2}, {"allreduce", 2},
		{"allreduce/memnet", 2}, {"model/config", 3}, {"model/samples", 3},
		{"coordinator", 4}, {"coordinator/membership", 4}, {"worker", 4},
		{"cmd/ncsn/internal/clustertest", 5}, {"cmd/ncsn", 6},
	} {
		if got, ok := layerOf(tc.pkg); !ok || got != tc.layer {
			t.Errorf("layerOf(%s) = %d, %v; want %d", tc.pkg, got, ok, tc.layer)
		}
	}
	if _, ok := layerOf("modelx"); ok {
		t.Error("modelx must not match model's row")
	}
}
