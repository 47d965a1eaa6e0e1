// Command loadgen POSTs one body to one URL over a fixed number of keep-alive
// connections and prints a JSON summary on stdout.
//
// Open loop (-rate > 0): requests are due at a constant rate, the n-th at
// start + n/rate, whatever the server does (wrk2's model). A due request waits
// for a free connection, and its latency is measured from the time it was due,
// so a stalled server shows up in the percentiles instead of slowing the
// generator down (no coordinated omission). Requests still waiting when the
// run ends are drained for at most -drain and the rest are counted as dropped.
//
// Closed loop (-rate 0): every connection sends its next request as soon as the
// previous answer arrived; latency is measured from the actual send.
//
// Only loopback addresses are accepted: benchmark traffic never leaves the machine.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type latencySummary struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type summary struct {
	Mode        string         `json:"mode"`
	OfferedRate float64        `json:"offered_rate"`
	Connections int            `json:"connections"`
	DurationS   float64        `json:"duration_s"`
	Sent        int            `json:"sent"`
	Completed   int            `json:"completed"`
	Non2xx      int            `json:"non_2xx"`
	Errors      int            `json:"errors"`
	Dropped     int            `json:"dropped"`
	Rate        float64        `json:"rate"`
	OkRate      float64        `json:"ok_rate"`
	LatencyMs   latencySummary `json:"latency_ms"`
	Statuses    map[int]int    `json:"statuses"`
}

type result struct {
	latency time.Duration
	status  int
	failed  bool
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return sorted[rank]
}

func loopbackOnly(raw string) error {
	parsed, err := url.Parse(raw)
	if err != nil {
		return err
	}
	ip := net.ParseIP(parsed.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing %q: only loopback IP addresses are allowed", parsed.Host)
	}
	return nil
}

func main() {
	target := flag.String("url", "", "loopback URL to POST to")
	bodyPath := flag.String("body", "", "file with the request body")
	contentType := flag.String("content-type", "application/json", "Content-Type header")
	vary := flag.String("vary", "", "16-character substring of the body replaced by a per-request counter")
	rate := flag.Float64("rate", 0, "requests per second (open loop); 0 = closed loop")
	duration := flag.Duration("duration", 10*time.Second, "how long requests are started")
	connections := flag.Int("connections", 32, "keep-alive connections")
	drain := flag.Duration("drain", 5*time.Second, "open loop: how long due requests may still be sent after -duration")
	timeout := flag.Duration("timeout", 30*time.Second, "per-request timeout")
	flag.Parse()

	if err := loopbackOnly(*target); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	body, err := os.ReadFile(*bodyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	head, tail := body, []byte(nil)
	if *vary != "" {
		at := bytes.Index(body, []byte(*vary))
		if at < 0 || len(*vary) != 16 {
			fmt.Fprintln(os.Stderr, "loadgen: -vary must be a 16-character substring of the body")
			os.Exit(2)
		}
		head, tail = body[:at], body[at+len(*vary):]
	}
	var counter atomic.Uint64
	counter.Store(uint64(time.Now().UnixNano())) // distinct ids from one run to the next
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			MaxConnsPerHost:     *connections,
			MaxIdleConnsPerHost: *connections,
			DisableCompression:  true,
			Proxy:               nil, // never through a proxy: the target is on loopback
		},
	}
	send := func(due time.Time) result {
		payload := body
		if tail != nil {
			// Distinct task ids spread records over partitions, as real traffic does.
			payload = make([]byte, 0, len(body))
			payload = append(payload, head...)
			payload = fmt.Appendf(payload, "%016x", counter.Add(1))
			payload = append(payload, tail...)
		}
		request, _ := http.NewRequest(http.MethodPost, *target, bytes.NewReader(payload))
		request.Header.Set("Content-Type", *contentType)
		response, err := client.Do(request)
		if err != nil {
			return result{latency: time.Since(due), failed: true}
		}
		_, _ = io.Copy(io.Discard, response.Body)
		_ = response.Body.Close()
		return result{latency: time.Since(due), status: response.StatusCode}
	}

	results := make(chan result, 4096)
	var collected []result
	collectorDone := make(chan struct{})
	go func() {
		for r := range results {
			collected = append(collected, r)
		}
		close(collectorDone)
	}()

	var workers sync.WaitGroup
	start := time.Now()
	end := start.Add(*duration)
	dropped := 0
	mode := "closed"
	if *rate > 0 {
		mode = "open"
		// Bounded: at most rate*duration requests are ever due.
		due := make(chan time.Time, int(*rate*duration.Seconds())+1)
		for i := 0; i < *connections; i++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for intended := range due {
					if time.Now().After(end.Add(*drain)) {
						continue // counted as dropped below
					}
					results <- send(intended)
				}
			}()
		}
		interval := time.Duration(float64(time.Second) / *rate)
		scheduled := 0
		for {
			now := time.Now()
			if !now.Before(end) {
				break
			}
			next := start.Add(time.Duration(scheduled) * interval)
			for !next.After(now) && next.Before(end) {
				due <- next
				scheduled++
				next = start.Add(time.Duration(scheduled) * interval)
			}
			time.Sleep(time.Until(next))
		}
		close(due)
		workers.Wait()
		close(results)
		<-collectorDone
		dropped = scheduled - len(collected)
	} else {
		for i := 0; i < *connections; i++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for time.Now().Before(end) {
					results <- send(time.Now())
				}
			}()
		}
		workers.Wait()
		close(results)
		<-collectorDone
	}
	elapsed := time.Since(start)

	out := summary{Mode: mode, OfferedRate: *rate, Connections: *connections,
		DurationS: elapsed.Seconds(), Sent: len(collected) + dropped, Dropped: dropped,
		Statuses: map[int]int{}}
	var latencies []float64
	sum := 0.0
	for _, r := range collected {
		if r.failed {
			out.Errors++
			continue
		}
		out.Statuses[r.status]++
		if r.status < 200 || r.status > 299 {
			out.Non2xx++
		}
		out.Completed++
		ms := float64(r.latency) / float64(time.Millisecond)
		latencies = append(latencies, ms)
		sum += ms
	}
	sort.Float64s(latencies)
	out.Rate = float64(out.Completed) / elapsed.Seconds()
	out.OkRate = float64(out.Completed-out.Non2xx) / elapsed.Seconds()
	if len(latencies) > 0 {
		out.LatencyMs = latencySummary{
			P50: percentile(latencies, 50), P90: percentile(latencies, 90),
			P99: percentile(latencies, 99), P999: percentile(latencies, 99.9),
			Max: latencies[len(latencies)-1], Mean: sum / float64(len(latencies)),
		}
	}
	encoded, _ := json.Marshal(out)
	fmt.Println(string(encoded))
}
