// h3load is vegeta's constant-rate attack over HTTP/3: vegeta (as a library) paces the
// requests and records the results, quic-go's http3 transport carries them. Its results are
// vegeta's own format, so `vegeta report` reads them like any `vegeta attack` output.
//
//	h3load -targets targets.json -rate 500 -duration 20s -root-certs ca.pem -laddr 127.0.0.2 \
//	    -output results.bin
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type options struct {
	targets    string
	output     string
	rootCerts  string
	localAddr  string
	rate       int
	duration   time.Duration
	timeout    time.Duration
	workers    uint64
	maxWorkers uint64
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.targets, "targets", "", "targets file in vegeta's JSON format (required)")
	flag.StringVar(&o.output, "output", "stdout", "where to write the results (vegeta's gob format)")
	flag.StringVar(&o.rootCerts, "root-certs", "", "PEM file of the CA that signed the server")
	flag.StringVar(&o.localAddr, "laddr", "0.0.0.0", "local IP address the UDP socket binds to")
	flag.IntVar(&o.rate, "rate", 50, "requests per second; 0 = as fast as -max-workers allow")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to attack")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of each request")
	flag.Uint64Var(&o.workers, "workers", vegeta.DefaultWorkers, "initial number of workers")
	flag.Uint64Var(&o.maxWorkers, "max-workers", vegeta.DefaultMaxWorkers, "maximum workers")
	flag.Parse()
	return o
}

func tlsConfig(rootCerts string) (*tls.Config, error) {
	config := &tls.Config{NextProtos: []string{http3.NextProtoH3}}
	if rootCerts == "" {
		return config, nil
	}
	pem, err := os.ReadFile(rootCerts)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", rootCerts)
	}
	config.RootCAs = pool
	return config, nil
}

// connection is the one HTTP/3 connection of a process, as a browser keeps one per origin: it
// is dialled from one UDP socket bound to localAddr (the edge limits requests per client address),
// and dialled again, once, by the first request that finds it closed. quic-go's own pool
// (http3.Transport, v0.65.0) is not used: when a connection fails it drops whichever connection it
// pools for the host after every failed request, so each request in flight when the edge closed a
// connection dialled one of its own, and the dials that timed out dialled again. Measured: one
// process at 250/s dialled 1,899 connections in 15 s, each a handshake the edge paid for.
type connection struct {
	quic    *quic.Transport
	http3   *http3.Transport
	tls     *tls.Config
	mutex   sync.Mutex
	current *http3.ClientConn
}

func newConnection(localAddr string, config *tls.Config) (*connection, error) {
	ip := net.ParseIP(localAddr)
	if ip == nil {
		return nil, fmt.Errorf("-laddr %q is not an IP address", localAddr)
	}
	socket, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, err
	}
	return &connection{quic: &quic.Transport{Conn: socket}, http3: &http3.Transport{}, tls: config}, nil
}

func (c *connection) RoundTrip(req *http.Request) (*http.Response, error) {
	conn, err := c.open(req.Context(), req.URL.Host)
	if err != nil {
		return nil, err
	}
	return conn.RoundTrip(req)
}

// open returns the live connection, or dials it; requests that come meanwhile wait for that dial.
func (c *connection) open(ctx context.Context, hostPort string) (*http3.ClientConn, error) {
	c.mutex.Lock()
	defer c.mutex.Unlock()
	if c.current != nil && c.current.Context().Err() == nil {
		return c.current, nil
	}
	remote, err := net.ResolveUDPAddr("udp", hostPort)
	if err != nil {
		return nil, err
	}
	config := c.tls.Clone()
	config.ServerName = remote.IP.String()
	conn, err := c.quic.DialEarly(ctx, remote, config, &quic.Config{MaxIncomingStreams: -1})
	if err != nil {
		return nil, err
	}
	c.current = c.http3.NewClientConn(conn)
	return c.current, nil
}

func (c *connection) Close() error {
	c.mutex.Lock()
	defer c.mutex.Unlock()
	if c.current != nil {
		_ = c.current.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	}
	return c.quic.Close()
}

func output(path string) (*os.File, error) {
	if path == "stdout" {
		return os.Stdout, nil
	}
	return os.Create(path)
}

func run(o options) error {
	if o.targets == "" {
		return errors.New("-targets is required")
	}
	if o.rate == 0 && o.maxWorkers == vegeta.DefaultMaxWorkers {
		return errors.New("-rate 0 needs -max-workers")
	}
	source, err := os.Open(o.targets)
	if err != nil {
		return err
	}
	defer source.Close()
	targets, err := vegeta.ReadAllTargets(vegeta.NewJSONTargeter(source, nil, nil))
	if err != nil {
		return fmt.Errorf("reading %s: %w", o.targets, err)
	}
	config, err := tlsConfig(o.rootCerts)
	if err != nil {
		return err
	}
	h3, err := newConnection(o.localAddr, config)
	if err != nil {
		return err
	}
	defer h3.Close()
	out, err := output(o.output)
	if err != nil {
		return err
	}
	defer out.Close()
	attacker := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: h3, Timeout: o.timeout}),
		vegeta.Workers(o.workers),
		vegeta.MaxWorkers(o.maxWorkers),
	)
	encode := vegeta.NewEncoder(out)
	rate := vegeta.Rate{Freq: o.rate, Per: time.Second}
	for result := range attacker.Attack(vegeta.NewStaticTargeter(targets...), rate, o.duration, "h3") {
		if err := encode.Encode(result); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := run(parseFlags()); err != nil {
		fmt.Fprintln(os.Stderr, "h3load:", err)
		os.Exit(1)
	}
}
