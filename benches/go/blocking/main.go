// The Go twin of chapter 9's thread count: 100 goroutines each make a 100 ms blocking
// system call (nanosleep through package syscall, no cgo), unbounded or through a channel
// of BOUND used as a semaphore (the senior article's pattern), at GOMAXPROCS=2. It prints
// the OS threads the calls added (Threads: of /proc/self/status at the end: Go keeps idle
// Ms, so that is every thread the calls started) and the wall time.
//
//	blocking unbounded|BOUND
//
// Linux only (it reads /proc). Bounded in count and time: 100 calls of 100 ms.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	calls = 100
	call  = 100 * time.Millisecond
)

// threads reads Threads: from /proc/self/status.
func threads() int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, "blocking:", err)
		os.Exit(1)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(rest))
			return n
		}
	}
	return 0
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: blocking unbounded|BOUND")
		os.Exit(2)
	}
	bound := 0
	if os.Args[1] != "unbounded" {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "blocking: BOUND must be a whole number above 0, got %q\n", os.Args[1])
			os.Exit(2)
		}
		bound = n
	}
	runtime.GOMAXPROCS(2)
	before := threads()
	start := time.Now()
	var sem chan struct{}
	if bound > 0 {
		sem = make(chan struct{}, bound)
	}
	var wg sync.WaitGroup
	for range calls {
		if sem != nil {
			sem <- struct{}{}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := syscall.NsecToTimespec(int64(call))
			// A raw system call: the M blocks in the kernel, as in a cgo call.
			_ = syscall.Nanosleep(&ts, nil)
			if sem != nil {
				<-sem
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	fmt.Printf("threads_added=%d wall_ms=%.0f\n", threads()-before, float64(wall.Microseconds())/1e3)
}
