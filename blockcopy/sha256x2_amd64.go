//go:build amd64 && !purego

package blockcopy

//go:generate go run sha256x2_gen.go

//go:noescape
func sha256x2SHANI(a, b *[8]uint32, pa, pb *byte, n int)

func haveSHANI() bool

var useSHA256x2 = haveSHANI()

// sha256x2Blocks hashes the whole 64-byte blocks of pa and pb (equal
// lengths) into the states a and b, two streams at once.
func sha256x2Blocks(a, b *[8]uint32, pa, pb []byte) {
	if n := len(pa) &^ 63; n > 0 {
		sha256x2SHANI(a, b, &pa[0], &pb[0], n)
	}
}
