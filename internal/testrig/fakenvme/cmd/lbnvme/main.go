// Command lbnvme serves the scripted fake NVMe/TCP controller
// (internal/testrig/fakenvme) as a process, for the demo on hosts whose
// kernel has no NVMe/TCP target (nvmet, nvmet-tcp): one subsystem with
// RAM namespaces, its discovery log page on the same port. It prints the
// subsystem's URL and serves until SIGINT or SIGTERM. The kernel target
// itself is tested in the VM lab (internal/testrig/vmlab).
//
//	lbnvme [--listen 127.0.0.1:4420] [--size 256M] [--block 512] [--nqn NQN]
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4420", "address to listen on (port 0: any free port)")
	size := flag.String("size", "256M", "size of the namespace (K, M, G suffixes)")
	block := flag.Int("block", 512, "logical block size: 512 or 4096")
	nqn := flag.String("nqn", "nqn.2026-12.org.lunbridge:demo", "subsystem NQN")
	flag.Parse()
	n, err := parseSize(*size)
	if err != nil || (*block != 512 && *block != 4096) || n < int64(*block) || n > 8<<30 {
		fmt.Fprintf(os.Stderr, "lbnvme: --size %s --block %d: want 512 or 4096-byte blocks and at most 8G\n", *size, *block)
		os.Exit(2)
	}
	f, err := fakenvme.Listen(fakenvme.Config{Addr: *listen, NQN: *nqn, AllowDigests: true, ANA: true,
		Namespaces: []fakenvme.NSConfig{{BlockSize: *block, Blocks: n / int64(*block)}}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "lbnvme: %v\n", err)
		os.Exit(1)
	}
	host, port, _ := net.SplitHostPort(f.Addr())
	f.SetDiscovery([]pdu.DiscoveryEntry{{TrType: 3, AdrFam: 1, SubType: 2, PortID: 1, CntlID: 0xffff, ASQSZ: 32,
		TrSvcID: port, TrAddr: host, SubNQN: *nqn}})
	fmt.Printf("nvme+tcp://%s/%s/1\n", f.Addr(), *nqn)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	f.Close()
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	v, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
	return v * mult, err
}
