package allreduce

import (
	"errors"
	"fmt"
)

// ErrAborted is wrapped by errors of operations ended by a newer epoch: by Abort, by a newer
// operation on this ring, or by a neighbour refusing an epoch it has moved past. The caller
// waits for the next ring view; no neighbour is to blame.
var ErrAborted = errors.New("aborted by a newer epoch")

// ErrClosed is wrapped by errors of operations ended because the Ring was closed.
var ErrClosed = errors.New("ring closed")

// PeerError is an operation's failure caused by one neighbour: it died, fell silent past the
// deadline, refused the operation, or sent bytes that do not decode. The worker reports Peer to
// the coordinator.
type PeerError struct {
	Peer string // the neighbour's address as given in Op.Members
	Err  error
}

func (e *PeerError) Error() string { return fmt.Sprintf("allreduce: neighbour %s: %v", e.Peer, e.Err) }
func (e *PeerError) Unwrap() error { return e.Err }
