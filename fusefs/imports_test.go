package fusefs

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package's dependencies to what the architecture
// allows: the standard library, blockdev, go-fuse and logrus.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"github.com/lunbridge/lunbridge/blockdev", "github.com/hanwen/go-fuse/v2/", "github.com/sirupsen/logrus"}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
	next:
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.Contains(strings.Split(path, "/")[0], ".") {
				continue // standard library
			}
			for _, a := range allowed {
				if path == a || strings.HasSuffix(a, "/") && strings.HasPrefix(path, a) {
					continue next
				}
			}
			t.Errorf("%s imports %s: fusefs may import only blockdev, go-fuse and logrus", f, path)
		}
	}
}
