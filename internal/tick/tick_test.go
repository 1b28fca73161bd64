package tick

import (
	"context"
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	n := 0
	Every(context.Background(), time.Millisecond, func() bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("f ran %d times, want 3 (until it returned false)", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Every(ctx, time.Millisecond, func() bool { t.Error("f ran after ctx was done"); return true })
}

func TestMonoAdvances(t *testing.T) {
	a := Mono()
	time.Sleep(2 * time.Millisecond)
	if b := Mono(); b-a < int64(2*time.Millisecond) {
		t.Errorf("Mono went from %d to %d over 2 ms", a, b)
	}
}
