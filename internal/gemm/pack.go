package gemm

// packA copies rows [i0, i0+mb) × columns [p0, p0+kb) of op(A), scaled by
// alpha, into dst as micro-panels of mr rows: element (i, p) of panel q lands
// at dst[q·mr·kb + p·mr + i]. The last panel is zero-padded to mr rows.
// Folding alpha in here costs nothing and keeps it out of the kernels.
func packA(mr int, trans bool, a []float32, lda, i0, p0, mb, kb int, alpha float32, dst []float32) {
	for ir := 0; ir < mb; ir += mr {
		mm := min(mr, mb-ir)
		panel := dst[ir*kb : (ir+mr)*kb]
		if trans {
			// op(A)(i, p) = a[p·lda + i]: each step is a contiguous run.
			for p := range kb {
				src := a[(p0+p)*lda+i0+ir:][:mm]
				d := panel[p*mr : p*mr+mr]
				if alpha == 1 {
					copy(d, src)
				} else {
					for i, v := range src {
						d[i] = alpha * v
					}
				}
				clear(d[mm:])
			}
			continue
		}
		// op(A)(i, p) = a[i·lda + p]: read each row once, scatter by mr.
		for i := range mm {
			src := a[(i0+ir+i)*lda+p0:][:kb]
			d := panel[i:]
			if alpha == 1 {
				for p, v := range src {
					d[p*mr] = v
				}
			} else {
				for p, v := range src {
					d[p*mr] = alpha * v
				}
			}
		}
		for i := mm; i < mr; i++ {
			for p := range kb {
				panel[p*mr+i] = 0
			}
		}
	}
}

// packB copies rows [p0, p0+kb) × columns [j0, j0+nb) of op(B) into dst as
// micro-panels of nr columns: element (p, j) of panel q lands at
// dst[q·nr·kb + p·nr + j]. The last panel is zero-padded to nr columns.
func packB(nr int, trans bool, b []float32, ldb, p0, j0, kb, nb int, dst []float32) {
	for jr := 0; jr < nb; jr += nr {
		nn := min(nr, nb-jr)
		panel := dst[jr*kb : (jr+nr)*kb]
		if !trans {
			// op(B)(p, j) = b[p·ldb + j]: each step is a contiguous run.
			for p := range kb {
				d := panel[p*nr : p*nr+nr]
				copy(d, b[(p0+p)*ldb+j0+jr:][:nn])
				clear(d[nn:])
			}
			continue
		}
		// op(B)(p, j) = b[j·ldb + p]: read each column of op(B) once.
		for j := range nn {
			src := b[(j0+jr+j)*ldb+p0:][:kb]
			d := panel[j:]
			for p, v := range src {
				d[p*nr] = v
			}
		}
		for j := nn; j < nr; j++ {
			for p := range kb {
				panel[p*nr+j] = 0
			}
		}
	}
}
