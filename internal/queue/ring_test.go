package queue

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestRingDropsOldest(t *testing.T) {
	r := NewRing[int](3)
	for i := 1; i <= 3; i++ {
		if _, dropped := r.Push(i); dropped {
			t.Fatalf("push %d dropped", i)
		}
	}
	old, dropped := r.Push(4)
	if !dropped || old != 1 {
		t.Fatalf("push 4: got (%d,%v), want (1,true)", old, dropped)
	}
	for _, want := range []int{2, 3, 4} {
		v, ok := r.TryPop()
		if !ok || v != want {
			t.Fatalf("pop: got (%d,%v), want %d", v, ok, want)
		}
	}
	if _, ok := r.TryPop(); ok {
		t.Fatal("ring should be empty")
	}
}

func TestRingPopBlocksUntilPush(t *testing.T) {
	r := NewRing[int](2)
	go func() { time.Sleep(10 * time.Millisecond); r.Push(7) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := r.Pop(ctx)
	if err != nil || v != 7 {
		t.Fatalf("got (%d,%v)", v, err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := r.Pop(ctx2); err == nil {
		t.Fatal("pop on cancelled ctx returned no error")
	}
}

func TestRingConcurrentCountsEveryItem(t *testing.T) {
	r := NewRing[int](8)
	const producers, each = 4, 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	dropped := 0
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, d := r.Push(i); d {
					mu.Lock()
					dropped++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if got := dropped + r.Len(); got != producers*each {
		t.Fatalf("dropped %d + queued %d != pushed %d", dropped, r.Len(), producers*each)
	}
}
