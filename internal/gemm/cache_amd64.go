package gemm

// detectCaches reads the deterministic cache parameters (CPUID leaf 4 on
// Intel, 0x8000001D on AMD), or AMD's older leaves 0x80000005/6.
func detectCaches() CacheSizes {
	maxID, ebx, ecx, edx := cpuid(0, 0)
	amd := ebx == 0x68747541 && ecx == 0x444d4163 && edx == 0x69746e65   // "AuthenticAMD"
	hygon := ebx == 0x6f677948 && ecx == 0x656e6975 && edx == 0x6e65476e // "HygonGenuine"
	maxExt, _, _, _ := cpuid(0x80000000, 0)
	leaf := uint32(4)
	if amd || hygon {
		leaf = 0
		if _, _, ecx1, _ := cpuid(0x80000001, 0); maxExt >= 0x8000001d && ecx1&(1<<22) != 0 { // TOPOEXT
			leaf = 0x8000001d
		}
	} else if maxID < 4 {
		leaf = 0
	}
	var c CacheSizes
	if leaf != 0 {
		for sub := uint32(0); sub < 16; sub++ {
			eax, ebx, ecx, _ := cpuid(leaf, sub)
			typ := eax & 0x1f
			if typ == 0 {
				break
			}
			if typ != 1 && typ != 3 { // data or unified
				continue
			}
			size := int((ebx>>22)+1) * int((ebx>>12)&0x3ff+1) * int(ebx&0xfff+1) * int(ecx+1)
			switch (eax >> 5) & 7 {
			case 1:
				c.L1 = size
			case 2:
				c.L2 = size
			}
		}
	}
	if c.L1 == 0 && (amd || hygon) && maxExt >= 0x80000006 {
		_, _, ecx5, _ := cpuid(0x80000005, 0)
		_, _, ecx6, _ := cpuid(0x80000006, 0)
		c.L1 = int(ecx5>>24) << 10
		c.L2 = int(ecx6>>16) << 10
	}
	return c.fill()
}
