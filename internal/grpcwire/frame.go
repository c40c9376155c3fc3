// Package grpcwire is a gRPC endpoint over HTTP/2 (RFC 9113, gRPC's PROTOCOL-HTTP2) for
// long-lived streams of large messages, one stream per connection.
//
// It speaks the same wire as grpc-go, and the tests hold it to that in both directions, but
// it does less, to move bytes with fewer copies and hand-offs:
//   - Frames are as large as the peer allows (SETTINGS_MAX_FRAME_SIZE), not grpc-go's fixed
//     16 KiB, and a message goes out in one vectored write from the caller's buffers.
//   - A server stream reads frames on the goroutine that asks for a message, straight into the
//     message's buffer: no reader goroutine, no intermediate buffer.
//   - A connection carries one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1), so there
//     is no multiplexing, priority or stream bookkeeping.
//
// Messages are opaque bytes (mem.BufferSlice); compression is not negotiated; deadlines are
// not propagated.
package grpcwire

import (
	"encoding/binary"
	"fmt"
)

// Frame types and flags (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// Settings (RFC 9113 §6.5.2).
const (
	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6
)

// Error codes (RFC 9113 §7).
const (
	errCodeNo            = 0x0
	errCodeProtocol      = 0x1
	errCodeFlowControl   = 0x3
	errCodeFrameSize     = 0x6
	errCodeRefusedStream = 0x7
	errCodeCancel        = 0x8
	errCodeCompression   = 0x9
)

const (
	clientPreface   = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	frameHeaderLen  = 9
	defaultMaxFrame = 16384
	maxFrameLimit   = 1<<24 - 1
	defaultWindow   = 65535
	maxWindow       = 1<<31 - 1
	msgPrefixLen    = 5 // gRPC's compressed flag and big-endian length
	maxHeaderBytes  = 64 << 10
	maxControlFrame = 64 << 10 // SETTINGS, PING, GOAWAY, ... payloads read whole
)

type frameHeader struct {
	length uint32
	typ    uint8
	flags  uint8
	stream uint32
}

func (h frameHeader) has(f uint8) bool { return h.flags&f != 0 }

func (h frameHeader) String() string {
	return fmt.Sprintf("frame type %d flags %#x stream %d length %d", h.typ, h.flags, h.stream, h.length)
}

func appendFrameHeader(b []byte, h frameHeader) []byte {
	return append(b, byte(h.length>>16), byte(h.length>>8), byte(h.length), h.typ, h.flags,
		byte(h.stream>>24&0x7f), byte(h.stream>>16), byte(h.stream>>8), byte(h.stream))
}

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length: uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:]) & (1<<31 - 1),
	}
}

type setting struct {
	id  uint16
	val uint32
}

func appendSettings(b []byte, ss ...setting) []byte {
	b = appendFrameHeader(b, frameHeader{length: uint32(6 * len(ss)), typ: frameSettings})
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, s.id)
		b = binary.BigEndian.AppendUint32(b, s.val)
	}
	return b
}

func appendWindowUpdate(b []byte, stream uint32, n uint32) []byte {
	b = appendFrameHeader(b, frameHeader{length: 4, typ: frameWindowUpdate, stream: stream})
	return binary.BigEndian.AppendUint32(b, n)
}

func appendRSTStream(b []byte, stream uint32, code uint32) []byte {
	b = appendFrameHeader(b, frameHeader{length: 4, typ: frameRSTStream, stream: stream})
	return binary.BigEndian.AppendUint32(b, code)
}

func appendGoAway(b []byte, lastStream uint32, code uint32) []byte {
	b = appendFrameHeader(b, frameHeader{length: 8, typ: frameGoAway})
	b = binary.BigEndian.AppendUint32(b, lastStream)
	return binary.BigEndian.AppendUint32(b, code)
}

// connError is a connection error (RFC 9113 §5.4.1): the connection ends with GOAWAY(code).
type connError struct {
	code uint32
	msg  string
}

func (e *connError) Error() string { return fmt.Sprintf("grpcwire: http2 error %d: %s", e.code, e.msg) }

func protocolError(format string, args ...any) error {
	return &connError{code: errCodeProtocol, msg: fmt.Sprintf(format, args...)}
}
