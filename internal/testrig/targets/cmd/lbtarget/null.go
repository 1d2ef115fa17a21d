package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/lunbridge/lunbridge/internal/testrig/nulltarget"
)

// serveNull runs the benchmark null target in the foreground (issue 24):
// reads return zeroes, writes are discarded, one goroutine per connection
// with batched socket I/O. --procs 1 (the default) keeps it on one P; pin
// the process with taskset to give it one core.
func serveNull(args []string) error {
	fs := flag.NewFlagSet("null", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:3261", "address to listen on")
	size := fs.String("size", "1G", "disk size")
	bs := fs.Int("block-size", 512, "block size")
	procs := fs.Int("procs", 1, "GOMAXPROCS (0: the Go default)")
	name := fs.String("name", nulltarget.DefaultTargetName, "target IQN")
	fs.Parse(args)
	n, err := parseSize(*size)
	if err != nil {
		return err
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("iscsi://%s/%s/0\n", ln.Addr(), *name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; ln.Close() }()
	return nulltarget.New(nulltarget.Config{TargetName: *name, Size: n, BlockSize: *bs}).Serve(ln)
}
