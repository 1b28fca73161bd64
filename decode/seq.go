package decode

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
)

// seqBlock is how many frame sequence numbers a camera reserves at a time.
const seqBlock = 10000

// SeqStore keeps every camera's frame sequence numbers unique across
// restarts. A camera reserves seqBlock numbers at a time in the KV bucket
// bus.DecodeBucket (one write per seqBlock frames), and a new worker starts
// after the last block reserved, so a camera's seq never repeats while the
// bucket lives. Annotation ids (and the annotation stream's dedupe by
// them), generated frames' names and consumers that order by seq rely on
// it. A restart skips the rest of its block: seq grows, with gaps.
type SeqStore struct{ kv jetstream.KeyValue }

// OpenSeqStore opens the decode state bucket, creating it with replicas
// if needed.
func OpenSeqStore(ctx context.Context, nc *nats.Conn, replicas int) (*SeqStore, error) {
	kv, err := bus.EnsureKV(ctx, nc, jetstream.KeyValueConfig{
		Bucket: bus.DecodeBucket, Description: "patchline decode: seq.<camera> -> end of its reserved seq block",
		History: 1, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &SeqStore{kv: kv}, nil
}

// reserve reserves the next block of camera's sequence numbers and returns
// its end: the block is (end-seqBlock, end].
func (s *SeqStore) reserve(ctx context.Context, camera string) (uint64, error) {
	key := "seq." + camera
	for {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			_, err = s.kv.Create(ctx, key, []byte(strconv.FormatUint(seqBlock, 10)))
			if err == nil {
				return seqBlock, nil
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // reserved meanwhile: read it again
			}
		}
		if err != nil {
			return 0, fmt.Errorf("decode: reserve seq of %s: %w", camera, err)
		}
		end, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("decode: %s in bucket %s is %q, not a number", key, bus.DecodeBucket, e.Value())
		}
		end += seqBlock
		_, err = s.kv.Update(ctx, key, []byte(strconv.FormatUint(end, 10)), e.Revision())
		if err == nil {
			return end, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("decode: reserve seq of %s: %w", camera, err)
		}
	}
}
