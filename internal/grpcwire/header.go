package grpcwire

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const contentType = "application/grpc"

// request is what a client's HEADERS say.
type request struct {
	method    string // the :path, "/package.Service/Method"
	authority string
	md        metadata.MD
}

func requestFields(scheme, authority, method, subtype string, md metadata.MD) []hpack.HeaderField {
	ct := contentType
	if subtype != "" {
		ct += "+" + subtype
	}
	fs := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: scheme},
		{Name: ":path", Value: method},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: ct},
		{Name: "te", Value: "trailers"},
		{Name: "user-agent", Value: "ncsn-grpcwire"},
	}
	return appendMD(fs, md)
}

// appendMD appends md's headers, leaving out those gRPC itself sets.
func appendMD(fs []hpack.HeaderField, md metadata.MD) []hpack.HeaderField {
	for k, vs := range md {
		k = strings.ToLower(k)
		if reserved(k) {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			fs = append(fs, hpack.HeaderField{Name: k, Value: v, Sensitive: k == "authorization"})
		}
	}
	return fs
}

// reserved tells the headers that gRPC itself sets; metadata cannot carry them.
func reserved(k string) bool {
	switch k {
	case "content-type", "te", "user-agent":
		return true
	}
	return strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-")
}

// parseRequest checks a request's headers as gRPC's PROTOCOL-HTTP2 has them. The metadata
// holds the headers that are not pseudo-headers or gRPC's own, content-type and user-agent
// included (as grpc-go gives them).
func parseRequest(fields []hpack.HeaderField) (request, error) {
	req := request{md: metadata.MD{}}
	var verb, ct string
	for _, f := range fields {
		switch {
		case f.Name == ":method":
			verb = f.Value
		case f.Name == ":path":
			req.method = f.Value
		case f.Name == ":authority":
			req.authority = f.Value
		case f.Name == ":scheme":
		case strings.HasPrefix(f.Name, ":"):
			return req, status.Errorf(codes.Internal, "grpcwire: unknown pseudo-header %q", f.Name)
		case f.Name == "content-type":
			ct = f.Value
			req.md.Append(f.Name, f.Value)
		case f.Name == "grpc-encoding":
			if f.Value != "identity" {
				return req, status.Errorf(codes.Unimplemented, "grpcwire: compression %q is not supported", f.Value)
			}
		case f.Name == "te", strings.HasPrefix(f.Name, "grpc-"):
		case strings.HasSuffix(f.Name, "-bin"):
			v, err := decodeBin(f.Value)
			if err != nil {
				return req, status.Errorf(codes.Internal, "grpcwire: header %s: %v", f.Name, err)
			}
			req.md.Append(f.Name, v)
		default:
			req.md.Append(f.Name, f.Value)
		}
	}
	switch {
	case verb != "POST":
		return req, status.Errorf(codes.Internal, "grpcwire: method %q, want POST", verb)
	case !isGRPC(ct):
		return req, status.Errorf(codes.Internal, "grpcwire: content-type %q is not gRPC", ct)
	case !strings.HasPrefix(req.method, "/"):
		return req, status.Errorf(codes.Unimplemented, "grpcwire: malformed method %q", req.method)
	}
	return req, nil
}

// isGRPC tells gRPC's content types: application/grpc, optionally with +subtype or ;params.
func isGRPC(ct string) bool {
	return ct == contentType || strings.HasPrefix(ct, contentType+"+") || strings.HasPrefix(ct, contentType+";")
}

func decodeBin(v string) (string, error) {
	if len(v)%4 == 0 {
		b, err := base64.StdEncoding.DecodeString(v)
		return string(b), err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	return string(b), err
}

func responseFields(subtype string, md metadata.MD) []hpack.HeaderField {
	ct := contentType
	if subtype != "" {
		ct += "+" + subtype
	}
	return appendMD([]hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: ct}}, md)
}

func trailerFields(st *status.Status) []hpack.HeaderField {
	fs := []hpack.HeaderField{{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))}}
	if m := st.Message(); m != "" {
		fs = append(fs, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(m)})
	}
	return fs
}

// response is what a server's HEADERS (headers, or trailers) say.
type response struct {
	httpStatus string
	ct         string
	st         *status.Status // nil without grpc-status
	md         metadata.MD    // the other headers, -bin values decoded
}

func parseResponse(fields []hpack.HeaderField) (response, error) {
	r := response{md: metadata.MD{}}
	code, msg, haveCode := 0, "", false
	for _, f := range fields {
		switch f.Name {
		default:
			if strings.HasPrefix(f.Name, ":") || reserved(f.Name) {
				continue
			}
			v := f.Value
			if strings.HasSuffix(f.Name, "-bin") {
				var err error
				if v, err = decodeBin(v); err != nil {
					return r, status.Errorf(codes.Internal, "grpcwire: header %s: %v", f.Name, err)
				}
			}
			r.md.Append(f.Name, v)
		case ":status":
			r.httpStatus = f.Value
		case "content-type":
			r.ct = f.Value
		case "grpc-status":
			c, err := strconv.ParseUint(f.Value, 10, 32)
			if err != nil {
				return r, status.Errorf(codes.Internal, "grpcwire: malformed grpc-status %q", f.Value)
			}
			code, haveCode = int(c), true
		case "grpc-message":
			msg = decodeGRPCMessage(f.Value)
		}
	}
	if haveCode {
		r.st = status.New(codes.Code(code), msg)
	}
	return r, nil
}

// httpStatusCode maps an HTTP status of a response that is not gRPC's (a proxy's, say) to a
// gRPC code, as gRPC's http-grpc-status-mapping.md does.
func httpStatusCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// encodeGRPCMessage percent-encodes what is not printable ASCII, and '%'.
func encodeGRPCMessage(m string) string {
	var b strings.Builder
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func decodeGRPCMessage(m string) string {
	if !strings.Contains(m, "%") {
		return m
	}
	var b strings.Builder
	for i := 0; i < len(m); i++ {
		if m[i] == '%' && i+2 < len(m) {
			if v, err := strconv.ParseUint(m[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(m[i])
	}
	return b.String()
}
