package fusefs

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// A failed mount says what is missing and what to do (UX review #50), not
// "fusermount exited with code 256".
func TestExplainMountError(t *testing.T) {
	cause := errors.New("fusermount exited with code 256")
	found := func(string) (string, error) { return "/usr/bin/fusermount3", nil }
	for _, tc := range []struct {
		name    string
		devFuse error
		want    string
	}{
		{"no device", &os.PathError{Op: "open", Path: "/dev/fuse", Err: os.ErrNotExist}, "no /dev/fuse"},
		{"no permission", &os.PathError{Op: "open", Path: "/dev/fuse", Err: os.ErrPermission}, "may not open /dev/fuse"},
		{"other", nil, "cannot mount /mnt/x: fusermount"},
	} {
		err := explainMountError("/mnt/x", errors.Join(cause), func() error { return tc.devFuse }, found)
		if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, cause) {
			t.Errorf("%s: %v; want %q and the cause kept", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "fusefs:") {
			t.Errorf("%s: package prefix in %v", tc.name, err)
		}
	}
}
