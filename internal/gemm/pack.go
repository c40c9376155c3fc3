package gemm

// packA copies rows [i0, i0+mb) × columns [p0, p0+kb) of op(A) into dst as
// micro-panels of mr rows: element (i, p) of panel q lands at
// dst[q·mr·kb + p·mr + i]. The last panel is zero-padded to mr rows.
func packA(kern *kernel, trans bool, a []float32, lda, i0, p0, mb, kb int, dst []float32) {
	mr := kern.mr
	if trans {
		// op(A)(i, p) = a[p·lda + i]: each step is a contiguous run.
		copyRows(kern, kb, a[p0*lda+i0:], lda, dst, mb, mr)
		return
	}
	for ir := 0; ir < mb; ir += mr {
		// op(A)(i, p) = a[i·lda + p]: a transpose of up to mr rows.
		transRows(kern, kb, a[(i0+ir)*lda+p0:], lda, dst[ir*kb:(ir+mr)*kb], min(mr, mb-ir), mr)
	}
}

// packB copies rows [p0, p0+kb) × columns [j0, j0+nb) of op(B) into dst as
// micro-panels of nr columns: element (p, j) of panel q lands at
// dst[q·nr·kb + p·nr + j]. The last panel is zero-padded to nr columns.
func packB(kern *kernel, trans bool, b []float32, ldb, p0, j0, kb, nb int, dst []float32) {
	nr := kern.nr
	if !trans {
		// op(B)(p, j) = b[p·ldb + j]: each step is a contiguous run.
		copyRows(kern, kb, b[p0*ldb+j0:], ldb, dst, nb, nr)
		return
	}
	for jr := 0; jr < nb; jr += nr {
		// op(B)(p, j) = b[j·ldb + p]: a transpose of up to nr rows.
		transRows(kern, kb, b[(j0+jr)*ldb+p0:], ldb, dst[jr*kb:(jr+nr)*kb], min(nr, nb-jr), nr)
	}
}

// copyRows lays columns [0, n) of kb rows of src out as panels of w columns:
// dst[q·w·kb + p·w + j] = src[p·lds + q·w + j], the last panel zero-padded.
func copyRows(kern *kernel, kb int, src []float32, lds int, dst []float32, n, w int) {
	q0 := 0 // panels done by the assembly
	if kern.copyRows != nil && (w%8 == 0 || w == 6) && n >= w {
		q0 = n / w
		_, _ = src[(kb-1)*lds+q0*w-1], dst[q0*w*kb-1] // what the assembly touches
		kern.copyRows(kb, &src[0], lds, &dst[0], w, q0)
	}
	for q := q0; q*w < n; q++ {
		nn := min(w, n-q*w)
		panel := dst[q*w*kb : (q+1)*w*kb]
		for p := range kb {
			d := panel[p*w : p*w+w]
			copy(d, src[p*lds+q*w:][:nn])
			clear(d[nn:])
		}
	}
}

// transRows sets dst[p·w + j] = src[j·lds + p] for p < kb, j < n, and zeroes
// columns n ≤ j < w.
func transRows(kern *kernel, kb int, src []float32, lds int, dst []float32, n, w int) {
	p0 := 0
	if n == w && w%8 == 0 && kern.transRows != nil && kb >= 8 {
		p0 = kb &^ 7
		_, _ = src[(w-1)*lds+p0-1], dst[p0*w-1] // what the assembly touches
		kern.transRows(p0/8, &src[0], lds, &dst[0], w)
	}
	for j := range n {
		s := src[j*lds : j*lds+kb]
		d := dst[j:]
		for p := p0; p < kb; p++ {
			d[p*w] = s[p]
		}
	}
	for j := n; j < w; j++ {
		for p := range kb {
			dst[p*w+j] = 0
		}
	}
}
