package client

import (
	"testing"
	"time"
)

func TestBackoffDelayBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := -1; attempt <= 40; attempt++ {
		n := max(attempt, 1)
		nominal := b.Min
		for i := 1; i < n && nominal < b.Max; i++ {
			nominal *= 2
		}
		nominal = min(nominal, b.Max)
		lo, hi := nominal/2, nominal
		var seenLow, seenHigh bool
		for range 500 {
			d := b.Delay(attempt)
			if d < lo || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, lo, hi)
			}
			// The jitter must actually spread: both halves of the range occur.
			if d < lo+(hi-lo)/2 {
				seenLow = true
			} else {
				seenHigh = true
			}
		}
		if !seenLow || !seenHigh {
			t.Fatalf("attempt %d: 500 delays all in one half of [%v, %v]", attempt, lo, hi)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	var b Backoff
	if d := b.Delay(1); d < DefaultBackoffMin/2 || d > DefaultBackoffMin {
		t.Fatalf("first delay %v outside [%v, %v]", d, DefaultBackoffMin/2, DefaultBackoffMin)
	}
	if d := b.Delay(1000); d < DefaultBackoffMax/2 || d > DefaultBackoffMax {
		t.Fatalf("capped delay %v outside [%v, %v]", d, DefaultBackoffMax/2, DefaultBackoffMax)
	}
	// Max below Min is raised to Min rather than producing nonsense.
	odd := Backoff{Min: time.Second, Max: time.Millisecond}
	if d := odd.Delay(5); d < time.Second/2 || d > time.Second {
		t.Fatalf("Max<Min: delay %v outside [500ms, 1s]", d)
	}
}
