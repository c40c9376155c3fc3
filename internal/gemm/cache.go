package gemm

// CacheSizes are the data cache sizes one core can count on, in bytes: its
// L1 and L2, and its share of the L3.
type CacheSizes struct {
	L1, L2, L3 int
}

// Sizes assumed where CPUID does not tell: those of the smallest x86 cores
// the kernels target (Intel client cores: 32 KiB L1, 256 KiB L2).
var fallbackCaches = CacheSizes{L1: 32 << 10, L2: 256 << 10, L3: 1 << 20}

// Caches returns this CPU's cache sizes, as the GEMM blocking uses them.
func Caches() CacheSizes { return caches }

var caches = detectCaches()

// maxL3 bounds a core's share of the L3: the legacy AMD leaf, and
// hypervisors, report the whole L3 of a many-core package, of which one core
// can count on little more than this.
const maxL3 = 4 << 20

// fill replaces unknown (zero) sizes by the fallback's and bounds the L3.
func (c CacheSizes) fill() CacheSizes {
	if c.L1 <= 0 {
		c.L1 = fallbackCaches.L1
	}
	if c.L2 <= 0 {
		c.L2 = fallbackCaches.L2
	}
	if c.L3 <= 0 {
		c.L3 = fallbackCaches.L3
	}
	c.L3 = max(c.L2, min(c.L3, maxL3))
	return c
}
