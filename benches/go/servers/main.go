// The Go twins of chapter 10's servers, for the echo and HTTP rows: Go's netpoller with one
// goroutine per connection, the design gmp::net copies.
//
//	servers echo ADDR [SECONDS]   TCP echo: each connection gets a goroutine that reads and
//	                              writes back until the peer closes
//	servers http ADDR [SECONDS]   net/http, GET / answers "Hello, world!\n" (keep-alive)
//
// ADDR must be a loopback address (127.0.0.1:7001): the benches never talk to anything
// else. The process exits by itself after SECONDS (default 600).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

const usage = "usage: servers echo|http ADDR [SECONDS]   (ADDR on loopback, e.g. 127.0.0.1:7001)"

func main() {
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fail(usage)
	}
	kind, addr := os.Args[1], os.Args[2]
	limit := uint64(600)
	if len(os.Args) == 4 {
		n, err := strconv.ParseUint(os.Args[3], 10, 64)
		if err != nil || n == 0 {
			fail(fmt.Sprintf("SECONDS must be a whole number above 0, got %q\n%s", os.Args[3], usage))
		}
		limit = n
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil || !tcp.IP.IsLoopback() {
		fail(fmt.Sprintf("%q is not a loopback address like 127.0.0.1:7001\n%s", addr, usage))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail(fmt.Sprintf("listen %s: %v", addr, err))
	}
	// The bound: the process ends by itself, whatever its connections are doing.
	time.AfterFunc(time.Duration(limit)*time.Second, func() {
		fmt.Fprintf(os.Stderr, "servers: %d s are up, exiting\n", limit)
		os.Exit(0)
	})
	fmt.Fprintf(os.Stderr, "servers: %s on %s for at most %d s\n", kind, addr, limit)
	switch kind {
	case "echo":
		echo(ln)
	case "http":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "Hello, world!\n")
		})
		fail(fmt.Sprintf("http: %v", http.Serve(ln, nil)))
	default:
		fail(usage)
	}
}

func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fail(fmt.Sprintf("accept: %v", err))
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(c)
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "servers:", msg)
	os.Exit(1)
}
