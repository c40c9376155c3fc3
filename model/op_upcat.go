package model

import (
	"gorgonia.org/gorgonia"
)

// upcat adds y = concat(nearest-upsample×2(m), skip) along channels, NHWC:
// m [B, h, w, C1], skip [B, 2h, 2w, C2] → [B, 2h, 2w, C1+C2] (torch.cat([up(m), skip], 1)).
func (b *builder[T]) upcat(name string, m, skip *gorgonia.Node) (*gorgonia.Node, error) {
	ms, ss := m.Shape().Clone(), skip.Shape().Clone()
	bs, h, w, c1, c2 := ms[0], ms[1], ms[2], ms[3], ss[3]
	H, W, c := 2*h, 2*w, c1+c2
	nw := b.ws.nw
	fwd := func(y []T, in [][]T) {
		m, sk := in[0], in[1]
		parallel(bs, nw, func(_, lo, hi int) {
			for s := lo; s < hi; s++ {
				for oy := 0; oy < H; oy++ {
					for ox := 0; ox < W; ox++ {
						o := ((s*H+oy)*W + ox)
						row := y[o*c : (o+1)*c]
						i := (s*h+oy/2)*w + ox/2
						copy(row[:c1], m[i*c1:(i+1)*c1])
						copy(row[c1:], sk[o*c2:(o+1)*c2])
					}
				}
			}
		})
	}
	diff := func(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
		dm, err := apply[T](name+".dm", ms, nil, func(dm []T, v [][]T) {
			dy := v[0]
			parallel(bs, nw, func(_, lo, hi int) {
				clear(dm[lo*h*w*c1 : hi*h*w*c1])
				for s := lo; s < hi; s++ {
					for oy := 0; oy < H; oy++ {
						for ox := 0; ox < W; ox++ {
							o := (s*H+oy)*W + ox
							i := (s*h+oy/2)*w + ox/2
							addTo(dm[i*c1:(i+1)*c1], dy[o*c:o*c+c1])
						}
					}
				}
			})
		}, nil, nil, grad)
		if err != nil {
			return nil, err
		}
		ds, err := apply[T](name+".dskip", ss, nil, func(ds []T, v [][]T) {
			dy := v[0]
			for o := 0; o < bs*H*W; o++ {
				copy(ds[o*c2:(o+1)*c2], dy[o*c+c1:(o+1)*c])
			}
		}, nil, nil, grad)
		return gorgonia.Nodes{dm, ds}, err
	}
	return apply[T](name, []int{bs, H, W, c}, nil, fwd, []bool{true, true}, diff, m, skip)
}
