package generate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/patchline/patchline/internal/config"
)

// A job is one unit of generation waiting for (or holding) a budget slot.
// Exactly one of run (the job ran, possibly as part of a batch) or reject
// (it never ran) is called, once.
type job struct {
	kind     string // KindCaption | KindFrame
	camera   string
	deadline time.Time
	enqueued time.Time
	// batchKey groups caption jobs that can be decoded together (same
	// sampling); "" never batches.
	batchKey string
	// auto jobs come from triggers: they never wait for a slot.
	auto    bool
	trigger string // TriggerEvery, TriggerChange, TriggerAnomaly, TriggerRequest

	sampling config.Sampling
	noCache  bool
	req      *Request        // nil for automatic jobs
	traceCtx context.Context // the request message's trace context, if any

	// respond answers a request with its result (nil for automatic jobs);
	// reject answers (or logs) a job that was not done.
	respond func(*Reply)
	reject  func(reason, msg string)
	// handBack, if set, may pass a rejected job on to another replica
	// instead; it reports whether it did (the job is then not counted).
	handBack func(reason string) bool
}

// scheduler caps concurrent generations at budget slots, with a bounded
// queue of jobs waiting for a slot. Jobs past their deadline are rejected
// with ReasonDeadline when they come up; a full queue rejects new jobs with
// ReasonOverloaded at once. Nothing is dropped without its reject or run
// being called, or its handBack taking it.
type scheduler struct {
	budget    int
	queueSize int
	batchSize int
	run       func(ctx context.Context, batch []*job) // called in its own goroutine, holding one slot

	mu      sync.Mutex
	running int
	queue   []*job
	closed  bool
	wg      sync.WaitGroup
	ctx     context.Context
	onEvent func(kind, reason string) // metrics hook: reason "" = started
}

func newScheduler(ctx context.Context, budget, queueSize, batchSize int, run func(context.Context, []*job), onEvent func(kind, reason string)) *scheduler {
	if onEvent == nil {
		onEvent = func(string, string) {}
	}
	return &scheduler{budget: max(1, budget), queueSize: max(0, queueSize), batchSize: max(1, batchSize), run: run, ctx: ctx, onEvent: onEvent}
}

// submit admits j: it starts at once if a slot is free, waits in the queue
// if there is room (never for an auto job), or is rejected.
func (s *scheduler) submit(j *job, now time.Time) {
	j.enqueued = now
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.rejectJob(j, ReasonUnavailable, "generate stage is shutting down")
		return
	}
	if !j.deadline.IsZero() && !now.Before(j.deadline) {
		s.mu.Unlock()
		s.rejectJob(j, ReasonDeadline, "deadline passed before the request was received")
		return
	}
	if s.running < s.budget && len(s.queue) == 0 {
		s.startLocked([]*job{j})
		s.mu.Unlock()
		return
	}
	if j.auto {
		running := s.running
		s.mu.Unlock()
		s.rejectJob(j, ReasonOverloaded, fmt.Sprintf("all %d generation slots busy (automatic trigger skipped)", running))
		return
	}
	if len(s.queue) >= s.queueSize {
		running, queued := s.running, len(s.queue)
		s.mu.Unlock()
		s.rejectJob(j, ReasonOverloaded, fmt.Sprintf("overloaded: %d generations running (generate.budget %d) and %d waiting (generate.queue_size %d); retry later",
			running, s.budget, queued, s.queueSize))
		return
	}
	s.queue = append(s.queue, j)
	s.mu.Unlock()
}

// startLocked runs batch in a new goroutine holding one slot. The jobs'
// answers wait until the slot is free again: a caller that sends its next
// request on an answer finds the slot it had.
func (s *scheduler) startLocked(batch []*job) {
	s.running++
	s.wg.Add(1)
	for _, j := range batch {
		s.onEvent(j.kind, "")
	}
	go func() {
		defer s.wg.Done()
		var answers []func() // run answers in this goroutine
		for _, j := range batch {
			if respond := j.respond; respond != nil {
				j.respond = func(r *Reply) { answers = append(answers, func() { respond(r) }) }
			}
			if reject := j.reject; reject != nil {
				j.reject = func(reason, msg string) { answers = append(answers, func() { reject(reason, msg) }) }
			}
		}
		s.run(s.ctx, batch)
		s.mu.Lock()
		s.running--
		s.dispatchLocked(time.Now())
		s.mu.Unlock()
		for _, answer := range answers {
			answer()
		}
	}()
}

// dispatchLocked starts queued jobs while slots are free, rejecting those
// past their deadline, and batching caption jobs with the same batchKey.
func (s *scheduler) dispatchLocked(now time.Time) {
	for s.running < s.budget && len(s.queue) > 0 {
		j := s.queue[0]
		s.queue = s.queue[1:]
		if !j.deadline.IsZero() && !now.Before(j.deadline) {
			s.rejectAsync(j, ReasonDeadline, fmt.Sprintf("deadline passed after waiting %s for a generation slot (generate.budget %d)", now.Sub(j.enqueued).Round(time.Millisecond), s.budget))
			continue
		}
		batch := []*job{j}
		if j.batchKey != "" {
			rest := s.queue[:0]
			for _, o := range s.queue {
				if len(batch) < s.batchSize && o.batchKey == j.batchKey && (o.deadline.IsZero() || now.Before(o.deadline)) {
					batch = append(batch, o)
					continue
				}
				rest = append(rest, o)
			}
			s.queue = rest
		}
		s.startLocked(batch)
	}
}

// expire rejects queued jobs past their deadline now, so a requester hears
// back at its deadline even while every slot stays busy.
func (s *scheduler) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.queue[:0]
	for _, j := range s.queue {
		if !j.deadline.IsZero() && !now.Before(j.deadline) {
			s.rejectAsync(j, ReasonDeadline, fmt.Sprintf("deadline passed after waiting %s for a generation slot (generate.budget %d)", now.Sub(j.enqueued).Round(time.Millisecond), s.budget))
			continue
		}
		kept = append(kept, j)
	}
	clear(s.queue[len(kept):])
	s.queue = kept
}

// close rejects everything queued and waits for running generations.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	for _, j := range q {
		s.rejectJob(j, ReasonUnavailable, "generate stage is shutting down")
	}
	s.wg.Wait()
}

// stats reports running and queued jobs.
func (s *scheduler) stats() (running, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running, len(s.queue)
}

func (s *scheduler) rejectJob(j *job, reason, msg string) {
	if j.handBack != nil && j.handBack(reason) {
		return
	}
	s.onEvent(j.kind, reason)
	j.reject(reason, msg)
}

// rejectAsync rejects j outside the scheduler's lock.
func (s *scheduler) rejectAsync(j *job, reason, msg string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.rejectJob(j, reason, msg)
	}()
}
