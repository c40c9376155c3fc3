package gemm

// CacheSizes are the data cache sizes one core can count on, in bytes: its
// L1 and L2 (the blocking and the Winograd chunks use no more).
type CacheSizes struct {
	L1, L2 int
}

// Sizes assumed where CPUID does not tell: those of the smallest x86 cores
// the kernels target (Intel client cores: 32 KiB L1, 256 KiB L2).
var fallbackCaches = CacheSizes{L1: 32 << 10, L2: 256 << 10}

// Caches returns this CPU's cache sizes, as the GEMM blocking uses them.
func Caches() CacheSizes { return caches }

var caches = detectCaches()

// fill replaces unknown (zero) sizes by the fallback's.
func (c CacheSizes) fill() CacheSizes {
	if c.L1 <= 0 {
		c.L1 = fallbackCaches.L1
	}
	if c.L2 <= 0 {
		c.L2 = fallbackCaches.L2
	}
	return c
}
