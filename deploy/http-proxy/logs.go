package main

// --log_format=json: every line switchboard-http writes to stderr (its own,
// net/http's and grpc-go's) is one JSON object: ts (UTC), level, component,
// msg. The READY line on stdout is the process's start handshake, not a log
// line.

import (
	"encoding/json"
	"io"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/grpclog"
)

type jsonLines struct {
	mu        sync.Mutex
	out       io.Writer
	component string
	level     string
}

func (j *jsonLines) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	line, err := json.Marshal(struct {
		Ts        string `json:"ts"`
		Level     string `json:"level"`
		Component string `json:"component"`
		Msg       string `json:"msg"`
	}{time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), j.level, j.component, msg})
	if err != nil {
		return 0, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.out.Write(append(line, '\n')); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setupLogs routes the standard logger and grpc-go's through one format.
func setupLogs(format string) {
	if format != "json" {
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, os.Stderr, os.Stderr))
		return
	}
	log.SetFlags(0)
	log.SetOutput(&jsonLines{out: os.Stderr, component: "http", level: "info"})
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard,
		&jsonLines{out: os.Stderr, component: "http.grpc", level: "warn"},
		&jsonLines{out: os.Stderr, component: "http.grpc", level: "error"}))
}
