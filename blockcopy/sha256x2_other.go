//go:build !amd64 || purego

package blockcopy

const useSHA256x2 = false

func sha256x2Blocks(a, b *[8]uint32, pa, pb []byte) { panic("unreachable") }
