package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Quant says how float32 values are put on the wire.
type Quant uint8

const (
	// QuantNone sends float32 values unchanged.
	QuantNone Quant = iota
	// QuantBF16 rounds to bfloat16 (nearest, ties to even).
	QuantBF16
	// QuantInt8 sends an int8 per value and a float32 absmax scale per Int8Block values.
	QuantInt8
	// QuantInt4 sends 4 bits per value and a bfloat16 absmax scale per Int4Block values.
	// It needs error feedback (Op.Residual) to train as well as the others.
	QuantInt4
)

// Int8Block is the number of values sharing one scale under QuantInt8.
const Int8Block = 128

// Compressor is the lossless stage applied after byte-shuffling the quantised bytes.
type Compressor uint8

const (
	CompressNone Compressor = iota
	CompressZstd
	CompressS2
)

var quantNames = [...]string{QuantNone: "none", QuantBF16: "bf16", QuantInt8: "int8", QuantInt4: "int4"}
var compressorNames = [...]string{CompressNone: "none", CompressZstd: "zstd", CompressS2: "s2"}

func (q Quant) String() string {
	if int(q) < len(quantNames) {
		return quantNames[q]
	}
	return fmt.Sprintf("quant(%d)", uint8(q))
}

func (c Compressor) String() string {
	if int(c) < len(compressorNames) {
		return compressorNames[c]
	}
	return fmt.Sprintf("compressor(%d)", uint8(c))
}

// Codec is what every member of an operation must agree on: a quantisation and a compressor.
// The zero value sends raw float32.
type Codec struct {
	Quant      Quant
	Compressor Compressor
}

// ParseCodec reads names as given on the command line: quant none|bf16|int8|int4, compressor
// none|zstd|s2 ("" means none).
func ParseCodec(quant, compressor string) (Codec, error) {
	var c Codec
	found := false
	for i, n := range quantNames {
		if n == quant {
			c.Quant, found = Quant(i), true
		}
	}
	if !found {
		return Codec{}, fmt.Errorf("allreduce: unknown codec %q: want none, bf16, int8 or int4", quant)
	}
	if compressor == "" {
		return c, nil
	}
	found = false
	for i, n := range compressorNames {
		if n == compressor {
			c.Compressor, found = Compressor(i), true
		}
	}
	if !found {
		return Codec{}, fmt.Errorf("allreduce: unknown compressor %q: want none, zstd or s2", compressor)
	}
	return c, nil
}

// String is "int8+zstd", or just "int8" without a compressor.
func (c Codec) String() string {
	if c.Compressor == CompressNone {
		return c.Quant.String()
	}
	return c.Quant.String() + "+" + c.Compressor.String()
}

// Lossy reports whether decoding does not return the encoded values exactly; only then does
// error feedback (Op.Residual) carry anything.
func (c Codec) Lossy() bool { return c.Quant != QuantNone }

func (c Codec) validate() error {
	if int(c.Quant) >= len(quantNames) || int(c.Compressor) >= len(compressorNames) {
		return fmt.Errorf("allreduce: invalid codec %v", c)
	}
	return nil
}

// wireID names the codec in every piece, so that members configured differently fail loudly.
func (c Codec) wireID() uint32 { return uint32(c.Quant)<<4 | uint32(c.Compressor) }

// rawSize is the length of the quantised (pre-compression) encoding of n values.
func (c Codec) rawSize(n int) int {
	switch c.Quant {
	case QuantBF16:
		return 2 * n
	case QuantInt8:
		return 4*int8Blocks(n) + n
	case QuantInt4:
		return int4Size(n)
	default:
		return 4 * n
	}
}

func int8Blocks(n int) int { return (n + Int8Block - 1) / Int8Block }

// ErrCorrupt is wrapped by decode errors: the bytes are not a valid encoding.
var ErrCorrupt = errors.New("corrupt piece")

// Encoder encodes float32 values under one codec, reusing its buffers between calls.
// It is not safe for concurrent use.
type Encoder struct {
	codec Codec
	raw   []byte // quantised bytes, before shuffling
	shuf  []byte // shuffled bytes, the compressor's input
	zenc  *zstd.Encoder
}

// NewEncoder returns an encoder for c.
func NewEncoder(c Codec) (*Encoder, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	e := &Encoder{codec: c}
	if c.Compressor == CompressZstd {
		// Int8 and int4 codes hold almost no repeats for zstd to match, only a skewed
		// distribution (≈ 7.2 bits of entropy per int8 byte, ≈ 3.5 per int4 code on a real
		// gradient), and at SpeedFastest zstd stores match-less blocks raw unless told to
		// Huffman-code their literals anyway.
		z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithAllLitEntropyCompression(true),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, fmt.Errorf("allreduce: zstd encoder: %w", err)
		}
		e.zenc = z
	}
	return e, nil
}

// Codec returns the encoder's codec.
func (e *Encoder) Codec() Codec { return e.codec }

// Encode appends the encoding of src to dst and returns the extended slice; len of the
// appended part is what goes on the wire. If resid is not nil (it must then have len(src)),
// resid[i] receives src[i] minus the value a decoder will return for it: the quantisation
// error that error feedback carries into the next step. src is not modified.
func (e *Encoder) Encode(dst []byte, src, resid []float32) []byte {
	if resid != nil && len(resid) != len(src) {
		panic("allreduce: Encode: len(resid) != len(src)")
	}
	n := e.codec.rawSize(len(src))
	if e.codec.Compressor == CompressNone {
		dst, out := grow(dst, n)
		quantize(e.codec.Quant, out, src, resid)
		return dst
	}
	e.raw = resize(e.raw, n)
	quantize(e.codec.Quant, e.raw, src, resid)
	e.shuf = resize(e.shuf, n)
	shuffle(e.codec.Quant, e.shuf, e.raw, len(src))
	switch e.codec.Compressor {
	case CompressZstd:
		return e.zenc.EncodeAll(e.shuf, dst)
	default: // CompressS2
		start := len(dst)
		dst, out := grow(dst, s2.MaxEncodedLen(n))
		enc := s2.Encode(out, e.shuf)
		return dst[:start+len(enc)]
	}
}

// Decoder decodes pieces of one codec, reusing its buffers. It never allocates more than the
// decoded size of the piece it is asked for, and reports bad bytes as errors wrapping
// ErrCorrupt. It is not safe for concurrent use.
type Decoder struct {
	codec Codec
	raw   []byte // decompressed, still shuffled
	in    []byte // a received payload made contiguous
	zdec  *zstd.Decoder
}

// NewDecoder returns a decoder for c.
func NewDecoder(c Codec) (*Decoder, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	d := &Decoder{codec: c}
	if c.Compressor == CompressZstd {
		z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("allreduce: zstd decoder: %w", err)
		}
		d.zdec = z
	}
	return d, nil
}

// Decode writes the len(dst) values encoded in src into dst.
func (d *Decoder) Decode(dst []float32, src []byte) error { return d.decode(dst, src, false) }

// DecodeAdd adds the len(dst) values encoded in src to dst.
func (d *Decoder) DecodeAdd(dst []float32, src []byte) error { return d.decode(dst, src, true) }

func (d *Decoder) decode(dst []float32, src []byte, add bool) error {
	n := d.codec.rawSize(len(dst))
	if d.codec.Compressor == CompressNone {
		if len(src) != n {
			return fmt.Errorf("%w: %d bytes for %d values of %v, want %d", ErrCorrupt, len(src), len(dst), d.codec, n)
		}
		return dequantize(d.codec.Quant, dst, src, 1, add)
	}
	raw, err := d.decompress(src, n)
	if err != nil {
		return err
	}
	return dequantize(d.codec.Quant, dst, raw, 0, add)
}

// decodeSegs is decode of a payload in segments (as received). Raw float32 is read where
// it lies; other codecs need their input in one piece.
func (d *Decoder) decodeSegs(dst []float32, in *Piece, add bool) error {
	if d.codec != (Codec{}) {
		return d.decode(dst, in.contiguous(&d.in), add)
	}
	if n := in.payloadLen(); n != 4*len(dst) {
		return fmt.Errorf("%w: %d bytes for %d values of %v, want %d", ErrCorrupt, n, len(dst), d.codec, 4*len(dst))
	}
	switch {
	case add:
		floatRuns(in.Payload, func(i int, b []byte) { addBytes(dst[i:i+len(b)/4], b) })
	case littleEndian:
		in.Payload.CopyTo(floatBytes(dst))
	default:
		return d.decode(dst, in.contiguous(&d.in), add)
	}
	return nil
}

// decompress returns exactly n decompressed bytes, without ever holding more than n.
func (d *Decoder) decompress(src []byte, n int) ([]byte, error) {
	if cap(d.raw) < n {
		d.raw = make([]byte, 0, n)
	}
	switch d.codec.Compressor {
	case CompressZstd:
		// The cap limit makes DecodeAll fail rather than grow past n.
		out, err := d.zdec.DecodeAll(src, d.raw[:0:n])
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		if len(out) != n {
			return nil, fmt.Errorf("%w: zstd: %d bytes, want %d", ErrCorrupt, len(out), n)
		}
		return out, nil
	default: // CompressS2
		m, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("%w: s2: %v", ErrCorrupt, err)
		}
		if m != n {
			return nil, fmt.Errorf("%w: s2: %d bytes, want %d", ErrCorrupt, m, n)
		}
		out, err := s2.Decode(d.raw[:n], src)
		if err != nil {
			return nil, fmt.Errorf("%w: s2: %v", ErrCorrupt, err)
		}
		return out, nil
	}
}

func grow(b []byte, n int) (all, tail []byte) {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, l+n+l/4)
		copy(nb, b)
		b = nb
	}
	b = b[:l+n]
	return b, b[l:]
}

func resize(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// quantize writes the raw encoding of src into out (len rawSize(len(src))), in element order.
func quantize(q Quant, out []byte, src, resid []float32) {
	switch q {
	case QuantNone:
		if littleEndian {
			copy(out, floatBytes(src))
		} else {
			for i, v := range src {
				binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
			}
		}
		clear(resid)
	case QuantBF16:
		for i, v := range src {
			h := toBF16(v)
			binary.LittleEndian.PutUint16(out[2*i:], h)
			if resid != nil {
				resid[i] = v - math.Float32frombits(uint32(h)<<16)
			}
		}
	case QuantInt8:
		nb := int8Blocks(len(src))
		vals := out[4*nb:]
		for b := 0; b < nb; b++ {
			lo, hi := b*Int8Block, min((b+1)*Int8Block, len(src))
			var amax float32
			for _, v := range src[lo:hi] {
				// Written so that a NaN makes the scale NaN instead of being skipped.
				if a := float32(math.Abs(float64(v))); !(a <= amax) {
					amax = a
				}
			}
			scale := amax / 127
			binary.LittleEndian.PutUint32(out[4*b:], math.Float32bits(scale))
			// float64: 127/amax overflows float32 for subnormal amax.
			var inv float64
			if amax > 0 {
				inv = 127 / float64(amax)
			}
			for i := lo; i < hi; i++ {
				v := float64(src[i]) * inv
				if v >= 0 {
					v += 0.5
				} else {
					v -= 0.5
				}
				qi := int8(max(-127, min(127, int64(v))))
				vals[i] = byte(qi)
				if resid != nil {
					resid[i] = src[i] - float32(float32(qi)*scale) // conversion: no FMA, same value as the decoder
				}
			}
		}
	case QuantInt4:
		quantizeInt4(out, src, resid)
	}
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// floatBytes is the memory of x as bytes (little-endian float32 on little-endian machines).
func floatBytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// toBF16 rounds to nearest even, keeping NaNs NaN.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// shuffle groups byte k of every multi-byte element together (byte planes), which makes
// float data far more compressible. Only the parts made of multi-byte words are shuffled.
func shuffle(q Quant, dst, src []byte, n int) {
	switch q {
	case QuantNone:
		shuffleWords(dst, src, 4, n)
	case QuantBF16:
		shuffleWords(dst, src, 2, n)
	case QuantInt8:
		nb := int8Blocks(n)
		shuffleWords(dst, src, 4, nb)
		copy(dst[4*nb:], src[4*nb:])
	case QuantInt4:
		nb := int4Blocks(n)
		shuffleWords(dst, src, 2, nb)
		copy(dst[2*nb:], src[2*nb:])
	}
}

func shuffleWords(dst, src []byte, w, n int) {
	for k := 0; k < w; k++ {
		plane := dst[k*n : (k+1)*n]
		for i := range plane {
			plane[i] = src[i*w+k]
		}
	}
}

// dequantize reads len(dst) values from raw, which is either in element order (stride 1) or
// shuffled into byte planes (stride 0), and stores or adds them into dst.
func dequantize(q Quant, dst []float32, raw []byte, stride int, add bool) error {
	n := len(dst)
	shuffled := stride == 0
	switch q {
	case QuantNone:
		if shuffled {
			p0, p1, p2, p3 := raw[:n], raw[n:2*n], raw[2*n:3*n], raw[3*n:4*n]
			for i := range dst {
				v := math.Float32frombits(uint32(p0[i]) | uint32(p1[i])<<8 | uint32(p2[i])<<16 | uint32(p3[i])<<24)
				if add {
					dst[i] += v
				} else {
					dst[i] = v
				}
			}
			return nil
		}
		raw = raw[:4*n]
		switch {
		case add:
			addBytes(dst, raw)
		case littleEndian:
			copy(floatBytes(dst), raw)
		default:
			for i := range dst {
				dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		}
	case QuantBF16:
		for i := range dst {
			var h uint16
			if shuffled {
				h = uint16(raw[i]) | uint16(raw[n+i])<<8
			} else {
				h = binary.LittleEndian.Uint16(raw[2*i:])
			}
			v := math.Float32frombits(uint32(h) << 16)
			if add {
				dst[i] += v
			} else {
				dst[i] = v
			}
		}
	case QuantInt8:
		nb := int8Blocks(n)
		vals := raw[4*nb:]
		for b := 0; b < nb; b++ {
			var bits uint32
			if shuffled {
				bits = uint32(raw[b]) | uint32(raw[nb+b])<<8 | uint32(raw[2*nb+b])<<16 | uint32(raw[3*nb+b])<<24
			} else {
				bits = binary.LittleEndian.Uint32(raw[4*b:])
			}
			if bits>>31 != 0 {
				return fmt.Errorf("%w: negative int8 scale in block %d", ErrCorrupt, b)
			}
			scale := math.Float32frombits(bits)
			lo, hi := b*Int8Block, min((b+1)*Int8Block, n)
			for i := lo; i < hi; i++ {
				qi := int8(vals[i])
				if qi == -128 {
					return fmt.Errorf("%w: int8 value -128 at %d", ErrCorrupt, i)
				}
				v := float32(float32(qi) * scale)
				if add {
					dst[i] += v
				} else {
					dst[i] = v
				}
			}
		}
	case QuantInt4:
		return dequantizeInt4(dst, raw, shuffled, add)
	}
	return nil
}

// coderPair is an encoder and a decoder of one codec, kept by the Ring between operations.
type coderPair struct {
	enc *Encoder
	dec *Decoder
}

func (r *Ring) getCoders(c Codec) *coderPair {
	r.mu.Lock()
	if free := r.coders[c]; len(free) > 0 {
		p := free[len(free)-1]
		r.coders[c] = free[:len(free)-1]
		r.mu.Unlock()
		return p
	}
	r.mu.Unlock()
	enc, err := NewEncoder(c)
	if err != nil {
		panic(err) // c was validated
	}
	dec, err := NewDecoder(c)
	if err != nil {
		panic(err)
	}
	return &coderPair{enc, dec}
}

func (r *Ring) putCoders(c Codec, p *coderPair) {
	r.mu.Lock()
	r.coders[c] = append(r.coders[c], p)
	r.mu.Unlock()
}
