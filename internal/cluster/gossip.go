package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Roles of nodes in the gossip pool.
const (
	RoleCoordinator = "coordinator"
	RoleWorker      = "worker"
)

// Meta is a node's memberlist metadata.
type Meta struct {
	Role string `json:"role"`
	// Addr is the node's gRPC address.
	Addr string `json:"addr"`
	Run  string `json:"run"`
}

// ParseMeta decodes a node's metadata.
func ParseMeta(b []byte) (Meta, error) {
	var m Meta
	err := json.Unmarshal(b, &m)
	return m, err
}

// NodeName is a memberlist node name unique per process start: a restarted process on the
// same host and port gets a new name, so it never collides with its former self.
func NodeName(role, addr string) string {
	var b [4]byte
	rand.Read(b[:])
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "0"
	}
	if host == "" {
		host = "any"
	}
	host = strings.NewReplacer(":", "_", "[", "", "]", "").Replace(host)
	return fmt.Sprintf("%s-%s-%s-%s", role, host, port, hex.EncodeToString(b[:]))
}

// GossipConfig configures a memberlist node.
type GossipConfig struct {
	Name string
	// Bind is host:port to listen on (port 0: any free port).
	Bind string
	// Advertise, if set, is the host:port other nodes reach this one at.
	Advertise string
	Secret    []byte
	// ProbeInterval, ProbeTimeout and SuspicionMult tune the failure detector; zero keeps
	// memberlist's LAN default.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	Meta          Meta
	// Events receives joins, leaves and deaths; may be nil.
	Events memberlist.EventDelegate
	Logger *slog.Logger
}

// NewGossip starts a memberlist node tuned for quick failure detection: a dead node is
// declared after about ProbeInterval·(SuspicionMult+1) instead of LAN defaults of ~5 s.
func NewGossip(cfg GossipConfig) (*memberlist.Memberlist, error) {
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, err
	}
	if len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: node metadata is %d bytes, max %d", len(meta), memberlist.MetaMaxSize)
	}
	host, port, err := splitPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip address %q: %w", cfg.Bind, err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = cfg.Name
	c.BindAddr, c.BindPort = host, port
	c.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, err := splitPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise address %q: %w", cfg.Advertise, err)
		}
		c.AdvertiseAddr, c.AdvertisePort = ah, ap
	}
	c.SecretKey = GossipKey(cfg.Secret)
	c.Delegate = metaDelegate(meta)
	c.Events = cfg.Events
	pi, pt := cfg.ProbeInterval, cfg.ProbeTimeout
	if pi > 0 {
		c.ProbeInterval = pi
		c.GossipInterval = min(c.GossipInterval, pi/2)
	}
	if pt > 0 {
		c.ProbeTimeout = pt
	}
	if cfg.SuspicionMult > 0 {
		c.SuspicionMult = cfg.SuspicionMult
		c.SuspicionMaxTimeoutMult = 2
	}
	c.TCPTimeout = 2 * time.Second
	c.PushPullInterval = 10 * time.Second
	c.DeadNodeReclaimTime = 0
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	c.Logger = log.New(&slogWriter{log: lg.With("component", "memberlist")}, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip: %w", err)
	}
	return ml, nil
}

// JoinGossip joins the pool through addr, retrying until ctx ends.
func JoinGossip(ctx context.Context, ml *memberlist.Memberlist, addr string) error {
	for {
		_, err := ml.Join([]string{addr})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: join gossip at %s: %w", addr, errors.Join(err, ctx.Err()))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// GossipAddr is the address other nodes reach ml at.
func GossipAddr(ml *memberlist.Memberlist) string {
	n := ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

func splitPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

type metaDelegate []byte

func (d metaDelegate) NodeMeta(limit int) []byte                { return d }
func (metaDelegate) NotifyMsg([]byte)                           {}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// slogWriter turns memberlist's log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lvl := slog.LevelDebug
	switch {
	case strings.Contains(line, "[ERR]"):
		lvl = slog.LevelWarn // memberlist's errors are about peers, not this node
	case strings.Contains(line, "[WARN]"):
		lvl = slog.LevelInfo
	}
	if i := bytes.IndexByte(p, ']'); i >= 0 && strings.HasPrefix(line, "[") {
		line = strings.TrimSpace(line[strings.IndexByte(line, ']')+1:])
	}
	w.log.Log(context.Background(), lvl, line)
	return len(p), nil
}
