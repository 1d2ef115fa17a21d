package main

import (
	"runtime"
	"testing"

	"github.com/urfave/cli/v2"
)

// serve, attach and bench default to half the CPUs; other commands, an
// explicit --procs (0 included) and GOMAXPROCS in the environment win.
func TestDefaultProcs(t *testing.T) {
	saved := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(saved)
	cpus := runtime.NumCPU()
	for _, tc := range []struct {
		args []string
		env  string
		want int
	}{
		{[]string{"bench"}, "", max(1, cpus/2)},
		{[]string{"serve"}, "", max(1, cpus/2)},
		{[]string{"pull"}, "", cpus},
		{[]string{"--procs", "0", "bench"}, "", cpus},
		{[]string{"--procs", "3", "pull"}, "", 3},
		{[]string{"bench"}, "2", cpus}, // GOMAXPROCS=2 set: the runtime's, left alone
	} {
		runtime.GOMAXPROCS(cpus)
		t.Setenv("GOMAXPROCS", tc.env)
		if tc.env == "" {
			t.Setenv("GOMAXPROCS", "")
		}
		app := newApp()
		app.ExitErrHandler = func(*cli.Context, error) {}
		app.Run(append([]string{"lunbridge", "--log-level", "error"}, tc.args...)) // fails later: no URL
		if got := runtime.GOMAXPROCS(0); got != tc.want {
			t.Errorf("%v (GOMAXPROCS=%q): %d Ps, want %d", tc.args, tc.env, got, tc.want)
		}
	}
	runtime.GOMAXPROCS(cpus)
	t.Setenv("LUNBRIDGE_PROCS", "0")
	app := newApp()
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.Run([]string{"lunbridge", "--log-level", "error", "bench"})
	if got := runtime.GOMAXPROCS(0); got != cpus {
		t.Errorf("LUNBRIDGE_PROCS=0 bench: GOMAXPROCS changed to %d (0 means: leave all CPUs)", got)
	}
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 1, 8: 4} {
		if got := ioLoopProcs(cpus); got != want {
			t.Errorf("ioLoopProcs(%d) = %d, want %d", cpus, got, want)
		}
	}
}
