// The Go side of the class bench: what a goroutine costs, measured the way the Rust side
// measures an OS thread or a G of the workbook's runtime, so the two can stand in one table.
//
//	gobench spawn-join N   start one goroutine, wait for its value; N times, one at a time
//	gobench pingpong N     two goroutines, two unbuffered channels, N round trips
//	gobench yield N        two goroutines, each calls runtime.Gosched N times
//	gobench parked N       N goroutines blocked on one channel: RSS and create time per G
//	gobench fib N          fib(N), a goroutine for fib(k-1) at every k above 10, joined
//	gobench chain N        N goroutines, each starts the next; the last signals the start
//	gobench sleep N        N goroutines each sleep 100 ms: wall time of the whole, RSS per G
//
// Each run prints one line of JSON, for benches/src/go.rs:
//
//	{"kind":"pingpong","n":1000000,"ns_per_op":128.4,"rss_bytes_per_g":0,"gomaxprocs":1}
//
// ns_per_op is per spawn+join, per hand-off (a round trip is two), per Gosched, per
// created goroutine, per whole fib(N), per link of the chain, or per whole sleep run. fib and chain check their
// result (fib's value, the chain's length) and fail rather than print a time for wrong work. The Go runtime reads GOMAXPROCS from the environment itself; the class
// bench sets GOMAXPROCS=1 to compare with a runtime running on one P.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

const usage = "usage: gobench spawn-join|pingpong|yield|parked|fib|chain|sleep N"

func main() {
	if len(os.Args) != 3 {
		fail(usage)
	}
	kind := os.Args[1]
	n, err := strconv.ParseUint(os.Args[2], 10, 64)
	if err != nil || n == 0 {
		fail(fmt.Sprintf("N must be a whole number above 0, got %q\n%s", os.Args[2], usage))
	}

	var nsPerOp, rssPerG float64
	switch kind {
	case "spawn-join":
		spawnJoin(warmUp(n)) // why: the first Gs and channels allocate; later ones reuse
		nsPerOp = perOp(spawnJoin(n), n)
	case "pingpong":
		pingPong(warmUp(n))
		nsPerOp = perOp(pingPong(n), 2*n) // one round trip is two hand-offs
	case "yield":
		yield(warmUp(n))
		nsPerOp = perOp(yield(n), 2*n) // two goroutines yield n times each
	case "parked":
		// No warm-up: the dead Gs of a warm-up would be reused and hide the memory cost.
		var elapsed time.Duration
		elapsed, rssPerG = parked(n)
		nsPerOp = perOp(elapsed, n)
	case "fib":
		fibRun(min(n, 25)) // why: starts every P's thread before the timed run
		nsPerOp = perOp(fibRun(n), 1)
	case "chain":
		chain(warmUp(n))
		nsPerOp = perOp(chain(n), n)
	case "sleep":
		// No warm-up, as for parked: reused goroutines would hide the memory cost.
		var elapsed time.Duration
		elapsed, rssPerG = sleepers(n)
		nsPerOp = perOp(elapsed, 1)
	default:
		fail(fmt.Sprintf("unknown kind %q\n%s", kind, usage))
	}
	fmt.Printf("{\"kind\":%q,\"n\":%d,\"ns_per_op\":%.1f,\"rss_bytes_per_g\":%.1f,\"gomaxprocs\":%d}\n",
		kind, n, nsPerOp, rssPerG, runtime.GOMAXPROCS(0))
}

// spawnJoin starts a goroutine that sends one value on a fresh channel and waits for it.
func spawnJoin(n uint64) time.Duration {
	start := time.Now()
	for i := range n {
		done := make(chan uint64)
		go func() { done <- i }()
		<-done
	}
	return time.Since(start)
}

// pingPong passes one value back and forth: main sends on ping, the other goroutine
// answers on pong. Unbuffered, so every send waits for its receiver: each message is a
// hand-off from one goroutine to the other.
func pingPong(n uint64) time.Duration {
	ping, pong := make(chan uint64), make(chan uint64)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	start := time.Now()
	v := uint64(0)
	for range n {
		ping <- v
		v = <-pong
	}
	elapsed := time.Since(start)
	close(ping) // lets the other goroutine end
	return elapsed
}

// yield runs two goroutines that call runtime.Gosched n times each; on one P every call
// switches to the other goroutine.
func yield(n uint64) time.Duration {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	for range 2 {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-gate // why: both start yielding together, not one alone first
			for range n {
				runtime.Gosched()
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	done.Wait()
	return time.Since(start)
}

// parked starts n goroutines that block for good on one shared channel and returns the
// time to create them and the resident memory each adds. The time runs from the first `go`
// until every goroutine has run up to its receive. They stay blocked until the program exits.
func parked(n uint64) (time.Duration, float64) {
	forever := make(chan struct{})
	var started sync.WaitGroup
	started.Add(int(n))
	runtime.GC() // why: measure from a heap with no garbage in it
	before := vmRSS()
	start := time.Now()
	for range n {
		go func() {
			started.Done()
			<-forever
		}()
	}
	started.Wait()
	elapsed := time.Since(start)
	runtime.GC() // why: count what the parked goroutines keep, not garbage left on the way
	after := vmRSS()
	return elapsed, float64(after-before) / float64(n)
}

// sleepers starts n goroutines that each sleep 100 ms (chapter 11's row) and returns the
// wall time from the first `go` until the last one is done, and the RSS each adds, read
// once every goroutine has started (they are asleep then: starting them takes less than
// the nap). A goroutine that wakes early fails the run.
func sleepers(n uint64) (time.Duration, float64) {
	const nap = 100 * time.Millisecond
	var started, done sync.WaitGroup
	started.Add(int(n))
	done.Add(int(n))
	var early sync.Mutex
	earlyCount := 0
	runtime.GC() // why: measure from a heap with no garbage in it
	before := vmRSS()
	start := time.Now()
	for range n {
		go func() {
			t := time.Now()
			started.Done()
			time.Sleep(nap)
			if time.Since(t) < nap {
				early.Lock()
				earlyCount++
				early.Unlock()
			}
			done.Done()
		}()
	}
	started.Wait()
	asleep := vmRSS()
	done.Wait()
	elapsed := time.Since(start)
	if earlyCount > 0 {
		fail(fmt.Sprintf("%d goroutines woke before their %v", earlyCount, nap))
	}
	return elapsed, float64(asleep-before) / float64(n)
}

// fibCutoff: at or below it a goroutine computes fib sequentially, as the Rust twins do
// (benches/src/peers.rs FIB_CUTOFF); fib(35) then starts 196,417 goroutines.
const fibCutoff = 10

func seqFib(n uint64) uint64 {
	if n < 2 {
		return n
	}
	return seqFib(n-1) + seqFib(n-2)
}

// parFib starts a goroutine for fib(n-1), computes fib(n-2) itself, then joins: the
// channel has room for the one result, as a join handle holds it.
func parFib(n uint64) uint64 {
	if n <= fibCutoff {
		return seqFib(n)
	}
	done := make(chan uint64, 1)
	go func() { done <- parFib(n - 1) }()
	b := parFib(n - 2)
	return <-done + b
}

// fibRun times one nested fib(n) and checks its value against the loop's.
func fibRun(n uint64) time.Duration {
	start := time.Now()
	got := parFib(n)
	elapsed := time.Since(start)
	a, b := uint64(0), uint64(1)
	for range n {
		a, b = b, a+b
	}
	if got != a {
		fail(fmt.Sprintf("fib(%d) gave %d, expected %d", n, got, a))
	}
	return elapsed
}

// chain starts one goroutine that starts the next and ends, n in all; the last sends its
// number back to the start. Each link lives only until it has started the next.
func chain(n uint64) time.Duration {
	done := make(chan uint64)
	var link func(i uint64)
	link = func(i uint64) {
		if i == n {
			done <- i
			return
		}
		go link(i + 1)
	}
	start := time.Now()
	go link(1)
	got := <-done
	elapsed := time.Since(start)
	if got != n {
		fail(fmt.Sprintf("the chain of %d ended at link %d", n, got))
	}
	return elapsed
}

// vmRSS reads the resident set size of this process, in bytes, from /proc/self/status.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail("reading /proc/self/status (Linux only): " + err.Error())
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		// The line reads "VmRSS:     1234 kB".
		if rest, ok := strings.CutPrefix(lines.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				fail("cannot read the VmRSS line of /proc/self/status: " + lines.Text())
			}
			return kib * 1024
		}
	}
	fail("/proc/self/status has no VmRSS line")
	return 0
}

// warmUp is the count of the untimed first run: a tenth, at most 10,000.
func warmUp(n uint64) uint64 {
	return min(n/10+1, 10_000)
}

func perOp(d time.Duration, ops uint64) float64 {
	return float64(d.Nanoseconds()) / float64(ops)
}

// fail prints why on stderr and exits 2; stdout stays empty, so no half a line is parsed.
func fail(why string) {
	fmt.Fprintln(os.Stderr, "gobench: "+why)
	os.Exit(2)
}
