package grpcwire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// conn is one HTTP/2 connection carrying one stream. One goroutine at a time reads frames
// (the reader fields); any goroutine writes, whole frames under wmu.
type conn struct {
	nc   net.Conn
	pool mem.BufferPool

	// What this end advertised.
	recvMaxFrame uint32
	recvWindow   uint32 // the stream's and the connection's
	maxRecvMsg   int

	// Reader state.
	br            *bufio.Reader
	hdr           [frameHeaderLen]byte
	ctl           []byte
	hdec          *hpack.Decoder
	connUnacked   uint32
	streamUnacked uint32

	wmu  sync.Mutex
	wbuf []byte
	bufs net.Buffers
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu             sync.Mutex
	cond           sync.Cond
	peerMaxFrame   uint32
	peerInitWindow int64
	connWin        int64
	streamWin      int64
	settingsSeen   bool
	broken         error // the connection is unusable; senders return it
}

func newConn(nc net.Conn, maxFrame, window uint32, maxRecvMsg int, pool mem.BufferPool) *conn {
	c := &conn{
		nc: nc, pool: pool,
		recvMaxFrame: maxFrame, recvWindow: window, maxRecvMsg: maxRecvMsg,
		// Reads at least as large as the buffer bypass it, so a frame's payload goes from
		// the socket straight into the message it belongs to.
		br:             bufio.NewReaderSize(nc, 32<<10),
		peerMaxFrame:   defaultMaxFrame,
		peerInitWindow: defaultWindow,
		connWin:        defaultWindow,
		streamWin:      defaultWindow,
	}
	c.cond.L = &c.mu
	c.hdec = hpack.NewDecoder(4096, nil)
	c.hdec.SetMaxStringLength(maxHeaderBytes)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// settings is what this end advertises. A client's stream never receives more than refusals,
// so it asks for no large frames; the window covers both directions' needs.
func (c *conn) settings(server bool) []setting {
	ss := []setting{
		{settingInitialWindowSize, c.recvWindow},
		{settingMaxFrameSize, c.recvMaxFrame},
		{settingMaxHeaderListSize, maxHeaderBytes},
	}
	if server {
		return append(ss, setting{settingMaxConcurrentStreams, 1})
	}
	return append(ss, setting{settingEnablePush, 0})
}

// writeControl writes the frames that build appends.
func (c *conn) writeControl(build func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = build(c.wbuf[:0])
	_, err := c.nc.Write(c.wbuf)
	return err
}

// writeHello writes what opens the connection from this end: (a client's preface), its
// settings, and the connection window beyond the default.
func (c *conn) writeHello(server bool) error {
	return c.writeControl(func(b []byte) []byte {
		if !server {
			b = append(b, clientPreface...)
		}
		b = appendSettings(b, c.settings(server)...)
		if c.recvWindow > defaultWindow {
			b = appendWindowUpdate(b, 0, c.recvWindow-defaultWindow)
		}
		return b
	})
}

func (c *conn) readFrameHeader() (frameHeader, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return frameHeader{}, err
	}
	h := parseFrameHeader(c.hdr[:])
	if h.length > c.recvMaxFrame {
		return h, &connError{code: errCodeFrameSize, msg: fmt.Sprintf("%v exceeds the %d bytes advertised", h, c.recvMaxFrame)}
	}
	return h, nil
}

// readPayload reads a frame's whole payload into a buffer valid until the next call.
func (c *conn) readPayload(h frameHeader) ([]byte, error) {
	if h.length > maxControlFrame {
		return nil, &connError{code: errCodeFrameSize, msg: fmt.Sprintf("%v too large", h)}
	}
	if cap(c.ctl) < int(h.length) {
		c.ctl = make([]byte, h.length)
	}
	p := c.ctl[:h.length]
	_, err := io.ReadFull(c.br, p)
	return p, err
}

// goAway is a peer's GOAWAY.
type goAway struct{ last, code uint32 }

func (g *goAway) Error() string {
	return fmt.Sprintf("grpcwire: peer going away (last stream %d, code %d)", g.last, g.code)
}

// handleControl handles a connection-level frame or one that needs no stream state.
// stream is the connection's stream, if open. A GOAWAY comes back as *goAway.
func (c *conn) handleControl(h frameHeader, stream uint32) error {
	p, err := c.readPayload(h)
	if err != nil {
		return err
	}
	switch h.typ {
	case frameSettings:
		if h.stream != 0 {
			return protocolError("SETTINGS on stream %d", h.stream)
		}
		if h.has(flagAck) {
			if len(p) != 0 {
				return &connError{code: errCodeFrameSize, msg: "SETTINGS ack with a payload"}
			}
			return nil
		}
		if len(p)%6 != 0 {
			return &connError{code: errCodeFrameSize, msg: "SETTINGS payload not a multiple of 6"}
		}
		if err := c.applySettings(p); err != nil {
			return err
		}
		return c.writeControl(func(b []byte) []byte {
			return appendFrameHeader(b, frameHeader{typ: frameSettings, flags: flagAck})
		})
	case framePing:
		if h.stream != 0 || len(p) != 8 {
			return &connError{code: errCodeFrameSize, msg: "malformed PING"}
		}
		if h.has(flagAck) {
			return nil
		}
		return c.writeControl(func(b []byte) []byte {
			return append(appendFrameHeader(b, frameHeader{length: 8, typ: framePing, flags: flagAck}), p...)
		})
	case frameWindowUpdate:
		if len(p) != 4 {
			return &connError{code: errCodeFrameSize, msg: "malformed WINDOW_UPDATE"}
		}
		inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
		if h.stream != 0 && h.stream != stream {
			return nil // a stream that has ended
		}
		if inc == 0 {
			return protocolError("WINDOW_UPDATE of 0")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		w := &c.connWin
		if h.stream != 0 {
			w = &c.streamWin
		}
		if *w+inc > maxWindow {
			return &connError{code: errCodeFlowControl, msg: "window above 2^31-1"}
		}
		*w += inc
		c.cond.Broadcast()
		return nil
	case frameGoAway:
		if len(p) < 8 {
			return &connError{code: errCodeFrameSize, msg: "malformed GOAWAY"}
		}
		return &goAway{last: binary.BigEndian.Uint32(p) & (1<<31 - 1), code: binary.BigEndian.Uint32(p[4:])}
	case framePushPromise:
		return protocolError("PUSH_PROMISE")
	case frameContinuation:
		return protocolError("CONTINUATION without HEADERS")
	}
	return nil // PRIORITY, and types this end does not know, are ignored (RFC 9113 §4.1)
}

func (c *conn) applySettings(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; len(p) > 0; p = p[6:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case settingInitialWindowSize:
			if v > maxWindow {
				return &connError{code: errCodeFlowControl, msg: "initial window above 2^31-1"}
			}
			c.streamWin += int64(v) - c.peerInitWindow
			c.peerInitWindow = int64(v)
		case settingMaxFrameSize:
			if v < defaultMaxFrame || v > maxFrameLimit {
				return protocolError("max frame size %d", v)
			}
			c.peerMaxFrame = v
		case settingHeaderTableSize:
			c.wmu.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(v)
			c.wmu.Unlock()
		case settingEnablePush:
			if v > 1 {
				return protocolError("ENABLE_PUSH %d", v)
			}
		}
	}
	c.settingsSeen = true
	c.cond.Broadcast()
	return nil
}

// readHeaderBlock reads the rest of a HEADERS frame h and its CONTINUATIONs, and decodes it.
func (c *conn) readHeaderBlock(h frameHeader) ([]hpack.HeaderField, error) {
	p, err := c.readPayload(h)
	if err != nil {
		return nil, err
	}
	if h.has(flagPadded) {
		if len(p) < 1 || int(p[0]) > len(p)-1 {
			return nil, protocolError("HEADERS padding")
		}
		p = p[1 : len(p)-int(p[0])]
	}
	if h.has(flagPriority) {
		if len(p) < 5 {
			return nil, protocolError("HEADERS priority")
		}
		p = p[5:]
	}
	block := append([]byte(nil), p...)
	for end := h.has(flagEndHeaders); !end; {
		ch, err := c.readFrameHeader()
		if err != nil {
			return nil, err
		}
		if ch.typ != frameContinuation || ch.stream != h.stream {
			return nil, protocolError("%v inside a header block", ch)
		}
		if len(block)+int(ch.length) > maxHeaderBytes {
			return nil, protocolError("header block above %d bytes", maxHeaderBytes)
		}
		p, err := c.readPayload(ch)
		if err != nil {
			return nil, err
		}
		block, end = append(block, p...), ch.has(flagEndHeaders)
	}
	// Indexed fields can make a small block decode large: the list is bounded as decoded,
	// and once over, the rest is decoded without strings, to keep HPACK's table in step.
	var fields []hpack.HeaderField
	size := 0
	c.hdec.SetEmitEnabled(true)
	c.hdec.SetEmitFunc(func(f hpack.HeaderField) {
		if size += int(f.Size()); size > maxHeaderBytes {
			c.hdec.SetEmitEnabled(false)
			return
		}
		fields = append(fields, f)
	})
	_, err = c.hdec.Write(block)
	if err == nil {
		err = c.hdec.Close()
	}
	if err != nil {
		return nil, &connError{code: errCodeCompression, msg: fmt.Sprintf("header block: %v", err)}
	}
	if size > maxHeaderBytes {
		return nil, protocolError("header list above %d bytes", maxHeaderBytes)
	}
	return fields, nil
}

// writeHeaders writes a header block on stream, split into CONTINUATIONs as the peer's frame
// size requires.
func (c *conn) writeHeaders(stream uint32, fields []hpack.HeaderField, endStream bool) error {
	c.mu.Lock()
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	b := c.wbuf[:0]
	typ, flags := uint8(frameHeaders), uint8(0)
	if endStream {
		flags = flagEndStream
	}
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), maxFrame)
		f := flags
		if n == len(block) {
			f |= flagEndHeaders
		}
		b = append(appendFrameHeader(b, frameHeader{length: uint32(n), typ: typ, flags: f, stream: stream}), block[:n]...)
		block, typ, flags = block[n:], frameContinuation, 0
	}
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

var errWindowFull = status.Error(codes.ResourceExhausted, "grpcwire: the peer's flow-control window is full: it is not reading")

// takeWindow reserves up to want bytes of both windows and the peer's frame size. Unless wait,
// it fails rather than waits for the peer to open its windows.
func (c *conn) takeWindow(want int, wait bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.broken != nil {
			return 0, c.broken
		}
		if c.settingsSeen {
			if n := int(min(int64(want), c.connWin, c.streamWin, int64(c.peerMaxFrame))); n > 0 {
				c.connWin -= int64(n)
				c.streamWin -= int64(n)
				return n, nil
			}
		}
		if !wait {
			return 0, errWindowFull
		}
		c.cond.Wait()
	}
}

// sendMsg writes msg as one gRPC message on stream in DATA frames as large as the peer
// allows, each in one vectored write from msg's own buffers.
func (c *conn) sendMsg(stream uint32, msg mem.BufferSlice, wait bool) error {
	var pre [msgPrefixLen]byte
	n := msg.Len()
	if uint64(n) > 1<<32-1 {
		return status.Errorf(codes.ResourceExhausted, "grpcwire: message of %d bytes", n)
	}
	binary.BigEndian.PutUint32(pre[1:], uint32(n))
	segs := make([][]byte, 0, 1+len(msg))
	segs = append(segs, pre[:])
	for _, b := range msg {
		segs = append(segs, b.ReadOnlyData())
	}
	left := msgPrefixLen + n
	for left > 0 {
		k, err := c.takeWindow(left, wait)
		if err != nil {
			return err
		}
		left -= k
		c.wmu.Lock()
		c.wbuf = appendFrameHeader(c.wbuf[:0], frameHeader{length: uint32(k), typ: frameData, stream: stream})
		c.bufs = append(c.bufs[:0], c.wbuf)
		for k > 0 {
			m := min(k, len(segs[0]))
			if m > 0 {
				c.bufs = append(c.bufs, segs[0][:m])
			}
			k, segs[0] = k-m, segs[0][m:]
			if len(segs[0]) == 0 {
				segs = segs[1:]
			}
		}
		bufs := c.bufs // WriteTo consumes the slice it is called on
		_, err = bufs.WriteTo(c.nc)
		clear(c.bufs)
		c.wmu.Unlock()
		if err != nil {
			return c.fail(err)
		}
	}
	return nil
}

// endStream half-closes stream with an empty DATA frame.
func (c *conn) endStream(stream uint32) error {
	return c.writeControl(func(b []byte) []byte {
		return appendFrameHeader(b, frameHeader{typ: frameData, flags: flagEndStream, stream: stream})
	})
}

// ack records that n bytes of DATA on stream were read (stream 0: for the connection only)
// and gives the peer its window back once a quarter of it is used.
func (c *conn) ack(stream uint32, n uint32) error {
	c.connUnacked += n
	if stream != 0 {
		c.streamUnacked += n
	}
	cu, su := c.connUnacked, c.streamUnacked
	if cu < c.recvWindow/4 && su < c.recvWindow/4 {
		return nil
	}
	c.connUnacked = 0
	if su >= c.recvWindow/4 {
		c.streamUnacked = 0
	} else {
		su = 0
	}
	return c.writeControl(func(b []byte) []byte {
		if cu > 0 {
			b = appendWindowUpdate(b, 0, cu)
		}
		if su > 0 {
			b = appendWindowUpdate(b, stream, su)
		}
		return b
	})
}

// fail marks the connection broken with err (the first error stays), wakes its senders and
// closes it. It returns the error senders see.
func (c *conn) fail(err error) error {
	c.mu.Lock()
	if c.broken == nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Errorf(codes.Unavailable, "grpcwire: connection lost: %v", err)
		}
		c.broken = err
	}
	err = c.broken
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	return err
}

// abort ends the connection after a protocol violation, telling the peer why.
func (c *conn) abort(err error) error {
	var ce *connError
	if errors.As(err, &ce) {
		_ = c.writeControl(func(b []byte) []byte { return appendGoAway(b, 0, ce.code) })
		err = status.Error(codes.Internal, ce.Error())
	}
	return c.fail(err)
}

// assembler cuts gRPC messages out of a stream's DATA payloads, reading each message's
// bytes from the connection straight into a buffer of its own.
type assembler struct {
	pre    [msgPrefixLen]byte
	npre   int
	buf    *[]byte
	off    int
	inBody bool
	done   []mem.BufferSlice
}

// feed reads n bytes of DATA payload from c.
func (a *assembler) feed(c *conn, n int) error {
	for n > 0 {
		if !a.inBody {
			k := min(msgPrefixLen-a.npre, n)
			if _, err := io.ReadFull(c.br, a.pre[a.npre:a.npre+k]); err != nil {
				return err
			}
			a.npre, n = a.npre+k, n-k
			if a.npre < msgPrefixLen {
				continue
			}
			a.npre = 0
			if a.pre[0] != 0 {
				return status.Error(codes.Internal, "grpcwire: compressed message, and no compression was negotiated")
			}
			l := binary.BigEndian.Uint32(a.pre[1:])
			if uint64(l) > uint64(c.maxRecvMsg) {
				return status.Errorf(codes.ResourceExhausted, "grpcwire: message of %d bytes exceeds the limit of %d", l, c.maxRecvMsg)
			}
			if l == 0 {
				a.done = append(a.done, nil)
				continue
			}
			a.buf, a.off, a.inBody = c.pool.Get(int(l)), 0, true
			continue
		}
		b := (*a.buf)[a.off:]
		k := min(len(b), n)
		if _, err := io.ReadFull(c.br, b[:k]); err != nil {
			return err
		}
		a.off, n = a.off+k, n-k
		if a.off == len(*a.buf) {
			a.done = append(a.done, mem.BufferSlice{mem.NewBuffer(a.buf, c.pool)})
			a.buf, a.inBody = nil, false
		}
	}
	return nil
}

// partial reports whether a message has begun and not ended.
func (a *assembler) partial() bool { return a.inBody || a.npre > 0 }

// release frees what the assembler holds.
func (a *assembler) release(pool mem.BufferPool) {
	if a.buf != nil {
		pool.Put(a.buf)
		a.buf, a.inBody = nil, false
	}
	for _, m := range a.done {
		m.Free()
	}
	a.done = nil
}

// readData reads the rest of a DATA frame h of stream into a, and acknowledges it.
func (c *conn) readData(h frameHeader, a *assembler) error {
	n, pad := int(h.length), 0
	if h.has(flagPadded) {
		var p [1]byte
		if n < 1 {
			return protocolError("DATA padding")
		}
		if _, err := io.ReadFull(c.br, p[:]); err != nil {
			return err
		}
		pad = int(p[0])
		if pad > n-1 {
			return protocolError("DATA padding")
		}
		n -= 1 + pad
	}
	if err := a.feed(c, n); err != nil {
		return err
	}
	if _, err := c.br.Discard(pad); err != nil {
		return err
	}
	return c.ack(h.stream, h.length)
}
