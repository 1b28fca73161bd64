package decode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/patchline/patchline/internal/bus"
)

// Lease keys in bus.LeasesBucket.
const (
	leaseCameraPrefix  = "cam."
	leaseReplicaPrefix = "replica."
)

// leases share the cameras among the decode replicas on the same NATS:
// each camera is decoded by the one replica whose lease (a key
// cam.<camera> in a KV bucket whose entries expire after the lease TTL)
// it holds and renews. Every replica announces itself (replica.<id>, also
// renewed), so each can aim for its share, ceil(cameras / replicas): it
// takes free cameras while it has fewer and gives one back per round while
// it has more. A replica that dies stops renewing; within a TTL its
// cameras are free and the others take them.
type leases struct {
	kv   jetstream.KeyValue
	id   string
	revs map[string]uint64 // camera → revision of our lease; the lease loop's own
}

// openLeases opens the lease bucket (entries live ttl) for replica id.
func openLeases(ctx context.Context, nc *nats.Conn, ttl time.Duration, replicas int) (*leases, error) {
	kv, err := bus.EnsureKV(ctx, nc, jetstream.KeyValueConfig{
		Bucket: bus.LeasesBucket, Description: "patchline decode: cam.<camera> -> owning replica, replica.<id> -> alive",
		History: 1, TTL: ttl, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &leases{kv: kv, id: replicaID(), revs: map[string]uint64{}}, nil
}

// replicaID names this process: host, pid and a random suffix (a KV key
// token: letters, digits, '-' and '_').
func replicaID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// heartbeat says this replica is alive and returns how many are.
func (l *leases) heartbeat(ctx context.Context) (int, error) {
	if _, err := l.kv.Put(ctx, leaseReplicaPrefix+l.id, nil); err != nil {
		return 0, err
	}
	keys, err := l.kv.ListKeysFiltered(ctx, leaseReplicaPrefix+">")
	if err != nil {
		return 0, err
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return max(n, 1), nil
}

// acquire takes the lease of camera if it is free.
func (l *leases) acquire(ctx context.Context, camera string) (bool, error) {
	rev, err := l.kv.Create(ctx, leaseCameraPrefix+camera, []byte(l.id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	l.revs[camera] = rev
	return true, nil
}

// renew extends the lease of camera; an error means it is no longer ours
// (or NATS did not answer).
func (l *leases) renew(ctx context.Context, camera string) error {
	rev, err := l.kv.Update(ctx, leaseCameraPrefix+camera, []byte(l.id), l.revs[camera])
	if err != nil {
		return err
	}
	l.revs[camera] = rev
	return nil
}

// release gives the lease of camera back, if it is still ours.
func (l *leases) release(ctx context.Context, camera string) {
	if rev, ok := l.revs[camera]; ok {
		_ = l.kv.Delete(ctx, leaseCameraPrefix+camera, jetstream.LastRevision(rev))
		delete(l.revs, camera)
	}
}

// leave releases every lease and the replica's own key, so that the
// others take its cameras at once instead of after a TTL.
func (l *leases) leave(ctx context.Context) {
	for _, cam := range slices.Sorted(maps.Keys(l.revs)) {
		l.release(ctx, cam)
	}
	_ = l.kv.Delete(ctx, leaseReplicaPrefix+l.id)
}
