package scsi

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportsStdlibOnly enforces the package contract: scsi is a leaf
// codec and imports only the standard library (ARCHITECTURE.md, "Imports
// point down only").
func TestImportsStdlibOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, list := range [][]string{pkg.Imports, pkg.TestImports} {
		for _, imp := range list {
			if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
				t.Errorf("package scsi imports %q; only the standard library is allowed", imp)
			}
		}
	}
}
