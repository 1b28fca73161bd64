package bus_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/natstest"
)

// TestReadiness checks that Ready closes only after SetReady, once however
// often SetReady is called, and that a subscription made before SetReady
// receives what another connection publishes right after Ready closes.
func TestReadiness(t *testing.T) {
	url := natstest.Start(t)
	stageNC, other := natstest.Connect(t, url), natstest.Connect(t, url)
	var r bus.Readiness
	select {
	case <-r.Ready():
		t.Fatal("ready before SetReady")
	default:
	}
	got := make(chan struct{}, 1)
	if _, err := stageNC.Subscribe("ready.test", func(*nats.Msg) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); r.SetReady(stageNC) }()
	}
	<-r.Ready()
	if err := other.Publish("ready.test", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("a message published after Ready did not reach the subscription")
	}
	wg.Wait()
}
