package generate

import (
	"context"
	"sync"
	"testing"
	"time"
)

// outcomes records how each job ended: "ran" or its reject reason.
type outcomes struct {
	mu  sync.Mutex
	got map[int][]string
	all chan struct{}
	n   int
}

func newOutcomes(n int) *outcomes {
	return &outcomes{got: map[int][]string{}, all: make(chan struct{}), n: n}
}

func (o *outcomes) record(id int, what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got[id] = append(o.got[id], what)
	done := 0
	for _, v := range o.got {
		done += len(v)
	}
	if done == o.n {
		close(o.all)
	}
}

func (o *outcomes) wait(t *testing.T) map[int][]string {
	t.Helper()
	select {
	case <-o.all:
	case <-time.After(5 * time.Second):
		t.Fatalf("not every job ended: %v", o.got)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, v := range o.got {
		if len(v) != 1 {
			t.Errorf("job %d ended %d times: %v", id, len(v), v)
		}
	}
	return o.got
}

func TestSchedulerBudgetQueueAndOverload(t *testing.T) {
	release := make(chan struct{})
	var (
		mu         sync.Mutex
		running    int
		maxRunning int
	)
	const n = 12
	o := newOutcomes(n)
	ids := map[*job]int{}
	s := newScheduler(context.Background(), 2, 3, 1, func(_ context.Context, batch []*job) {
		mu.Lock()
		running++
		maxRunning = max(maxRunning, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		for _, j := range batch {
			o.record(ids[j], "ran")
		}
	}, nil)
	now := time.Now()
	for i := range n {
		j := &job{kind: KindFrame, deadline: now.Add(time.Minute)}
		ids[j] = i
		j.reject = func(reason, _ string) { o.record(i, reason) }
		s.submit(j, now)
	}
	if r, q := s.stats(); r != 2 || q != 3 {
		t.Fatalf("running %d, queued %d; want 2 and 3", r, q)
	}
	close(release)
	got := o.wait(t)
	count := map[string]int{}
	for _, v := range got {
		count[v[0]]++
	}
	if count["ran"] != 5 || count[ReasonOverloaded] != 7 {
		t.Errorf("outcomes %v, want 5 ran and 7 overloaded", count)
	}
	if maxRunning > 2 {
		t.Errorf("%d ran at once, budget 2", maxRunning)
	}
	s.close()
}

func TestSchedulerDeadlineWhileQueued(t *testing.T) {
	release := make(chan struct{})
	o := newOutcomes(3)
	s := newScheduler(context.Background(), 1, 4, 1, func(_ context.Context, batch []*job) {
		<-release
		o.record(0, "ran")
	}, nil)
	now := time.Now()
	first := &job{kind: KindCaption, deadline: now.Add(time.Minute), reject: func(r, _ string) { o.record(0, r) }}
	late := &job{kind: KindCaption, deadline: now.Add(50 * time.Millisecond), reject: func(r, _ string) { o.record(1, r) }}
	past := &job{kind: KindCaption, deadline: now.Add(-time.Second), reject: func(r, _ string) { o.record(2, r) }}
	s.submit(first, now)
	s.submit(late, now)
	s.submit(past, now)
	time.Sleep(80 * time.Millisecond)
	s.expire(time.Now())
	if _, q := s.stats(); q != 0 {
		t.Errorf("%d still queued after expire", q)
	}
	close(release)
	got := o.wait(t)
	if got[1][0] != ReasonDeadline || got[2][0] != ReasonDeadline || got[0][0] != "ran" {
		t.Errorf("outcomes %v", got)
	}
	s.close()
}

func TestSchedulerBatchesSameSampling(t *testing.T) {
	release := make(chan struct{})
	batches := make(chan int, 10)
	s := newScheduler(context.Background(), 1, 10, 3, func(_ context.Context, batch []*job) {
		<-release
		batches <- len(batch)
	}, nil)
	now := time.Now()
	mk := func(key string) *job {
		return &job{kind: KindCaption, batchKey: key, deadline: now.Add(time.Minute), reject: func(r, m string) { t.Errorf("rejected: %s %s", r, m) }}
	}
	s.submit(mk("a"), now) // runs alone, holding the only slot
	for _, k := range []string{"a", "b", "a", "a", "a", "b"} {
		s.submit(mk(k), now)
	}
	close(release)
	var sizes []int
	for len(sizes) < 4 {
		select {
		case b := <-batches:
			sizes = append(sizes, b)
		case <-time.After(5 * time.Second):
			t.Fatalf("batches %v, then nothing", sizes)
		}
	}
	s.close()
	// 1 (first), then a,a,a (batch of 3), then b,b, then the last a.
	want := []int{1, 3, 2, 1}
	if len(sizes) != len(want) {
		t.Fatalf("batches %v, want %v", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("batches %v, want %v", sizes, want)
		}
	}
}

func TestSchedulerAutoJobsNeverWait(t *testing.T) {
	release := make(chan struct{})
	s := newScheduler(context.Background(), 1, 10, 1, func(context.Context, []*job) { <-release }, nil)
	now := time.Now()
	s.submit(&job{kind: KindCaption, reject: func(r, m string) { t.Errorf("first rejected: %s", m) }}, now)
	var reason string
	s.submit(&job{kind: KindCaption, auto: true, reject: func(r, _ string) { reason = r }}, now)
	if reason != ReasonOverloaded {
		t.Errorf("auto job while busy: reason %q, want overloaded", reason)
	}
	if _, q := s.stats(); q != 0 {
		t.Errorf("auto job was queued")
	}
	close(release)
	s.close()
}

// TestSchedulerAnswersOnceTheSlotIsFree: a job's answer, a result or a
// rejection made while it ran, goes out only once its slot is free again,
// so that a caller who sends the next request on the answer finds the
// slot (with budget 1 and no queue it was refused, overloaded, now and
// then).
func TestSchedulerAnswersOnceTheSlotIsFree(t *testing.T) {
	s := newScheduler(context.Background(), 1, 0, 1, func(_ context.Context, batch []*job) {
		batch[0].respond(&Reply{})
		batch[0].reject(ReasonDeadline, "late")
	}, nil)
	defer s.close()
	running := make(chan int, 2)
	slotHeld := func() {
		r, _ := s.stats()
		running <- r
	}
	j := &job{kind: KindFrame, respond: func(*Reply) { slotHeld() }, reject: func(string, string) { slotHeld() }}
	s.submit(j, time.Now())
	for range 2 {
		select {
		case r := <-running:
			if r != 0 {
				t.Errorf("answered with %d slots running, want the job's own free", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer")
		}
	}
}
