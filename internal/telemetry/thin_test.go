package telemetry

import (
	"fmt"
	"testing"
)

func TestThinned(t *testing.T) {
	var logged []int
	for n := range 40 {
		if Thinned(n) {
			logged = append(logged, n)
		}
	}
	if got := fmt.Sprint(logged); got != "[1 2 4 8 16 32]" {
		t.Errorf("logged the times %s, want [1 2 4 8 16 32]", got)
	}
	if !Thinned(uint64(1)<<63) || Thinned(uint64(1)<<63+1) || Thinned(int64(-4)) {
		t.Error("Thinned is wrong at the edges of uint64 or for a negative count")
	}
}

func TestCounts(t *testing.T) {
	var c Counts
	for want := uint64(1); want <= 3; want++ {
		if got := c.Add("a"); got != want {
			t.Fatalf("Add(a) = %d, want %d", got, want)
		}
	}
	if got := c.Add("b"); got != 1 {
		t.Errorf("Add(b) = %d, want 1: keys count apart", got)
	}
	for i := range maxCountKeys {
		c.Add(fmt.Sprint("k", i))
	}
	if got := c.Add("a"); got != 1 {
		t.Errorf("Add(a) after %d more keys = %d, want 1: the counts start over", maxCountKeys, got)
	}
	c.Reset()
	if got := c.Add("b"); got != 1 {
		t.Errorf("Add(b) after Reset = %d, want 1", got)
	}
}
