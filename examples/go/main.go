// Lists a user's live sessions across the whole Switchboard fleet and, with
// -terminate, logs them out everywhere except the devices in -keep.
//
//	out/sessions 42
//	out/sessions -terminate -keep <client id>,<client id> 42
//
// Connects to SWITCHBOARD_ADDR (default 127.0.0.1:50051) with the API key in
// SWITCHBOARD_API_KEY (default: the dev key of config/switchboard.yaml).
//
// An answer with complete=false lacks what the gateways it names hold. As
// the README recommends: ask again a couple of times with a short pause; a
// list that stays incomplete is shown as such, never as "these are all the
// sessions"; a terminate that stays incomplete may have left sessions open on
// the named gateways (calling it again closes what is left). Exit status: 0
// complete, 3 still incomplete, 1 the call failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchboardv1 "switchboard/gen/v1"
)

const (
	attempts = 3
	deadline = 2 * time.Second
)

// coverage is what every fleet-wide answer says about its completeness.
type coverage struct {
	complete bool
	missing  []string
	reasons  map[string]string
	reason   string
}

func (c coverage) String() string {
	names := c.missing
	if len(names) == 0 {
		names = []string{"?"}
	}
	parts := make([]string, 0, len(names))
	for _, g := range names {
		why := c.reasons[g]
		if why == "" {
			why = c.reason
		}
		if why == "" {
			why = "no reason given"
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", g, why))
	}
	return strings.Join(parts, ", ")
}

// withRetries calls until the answer is complete, at most `attempts` times.
func withRetries(what string, call func() (coverage, error)) (coverage, error) {
	for attempt := 1; ; attempt++ {
		cov, err := call()
		if err != nil || cov.complete || attempt == attempts {
			return cov, err
		}
		pause := time.Duration(attempt) * 250 * time.Millisecond
		fmt.Fprintf(os.Stderr, "%s: incomplete (attempt %d of %d): missing %s; asking again in %d ms\n",
			what, attempt, attempts, cov, pause.Milliseconds())
		time.Sleep(pause)
	}
}

func run() int {
	app := flag.String("app", envOr("SWITCHBOARD_APP", "demo"), "the app")
	terminate := flag.Bool("terminate", false, "close the user's connections")
	keepList := flag.String("keep", "", "client IDs to keep open, comma-separated")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: sessions [-app APP] [-terminate] [-keep ID,ID] USER\n")
		flag.PrintDefaults()
	}
	// Flags may come before or after USER.
	var positional []string
	for args := os.Args[1:]; ; {
		if err := flag.CommandLine.Parse(args); err != nil {
			return 2
		}
		if args = flag.Args(); len(args) == 0 {
			break
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	if len(positional) != 1 {
		flag.Usage()
		return 2
	}
	user := positional[0]

	conn, err := grpc.Dial(envOr("SWITCHBOARD_ADDR", "127.0.0.1:50051"), grpc.WithInsecure())
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	defer conn.Close()
	client := switchboardv1.NewControlClient(conn)
	base := metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "apikey "+envOr("SWITCHBOARD_API_KEY", "dev-api-key-change-me"))

	var res *switchboardv1.UserConnectionsResult
	cov, err := withRetries("UserConnections", func() (coverage, error) {
		ctx, cancel := context.WithTimeout(base, deadline)
		defer cancel()
		resp, err := client.UserConnections(ctx, &switchboardv1.UserConnectionsRequest{AppId: *app, UserId: user})
		if err != nil {
			return coverage{}, err
		}
		res = resp.GetResult()
		return coverage{res.GetComplete(), res.GetGatewaysMissing(), res.GetMissingReasons(), res.GetIncompleteReason()}, nil
	})
	if err != nil {
		return fail(err)
	}
	state := "complete"
	if !cov.complete {
		state = fmt.Sprintf("INCOMPLETE: missing %s: a session there may not be listed", cov)
	}
	fmt.Printf("user %s in app %s: %d connection(s), %s\n", user, *app, len(res.GetConnections()), state)
	ids := make([]string, 0, len(res.GetConnections()))
	for id := range res.GetConnections() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := res.GetConnections()[id]
		fmt.Printf("  %s app=%s %s transport=%s/%s gateway=%s\n", id, c.GetAppName(), c.GetAppVersion(),
			c.GetTransport(), c.GetProtocol(), c.GetGateway())
	}
	if !*terminate {
		if cov.complete {
			return 0
		}
		return 3
	}

	var keep []string
	for _, k := range strings.Split(*keepList, ",") {
		if k != "" {
			keep = append(keep, k)
		}
	}
	closed := uint32(0)
	// Again until complete: a second call closes what the first could not reach.
	tcov, err := withRetries("TerminateUser", func() (coverage, error) {
		ctx, cancel := context.WithTimeout(base, deadline)
		defer cancel()
		r, err := client.TerminateUser(ctx, &switchboardv1.TerminateUserRequest{AppId: *app, UserId: user, ExceptClientIds: keep})
		if err != nil {
			return coverage{}, err
		}
		closed += r.GetClosed()
		c := r.GetCoverage()
		return coverage{c.GetComplete(), c.GetGatewaysMissing(), c.GetMissingReasons(), c.GetIncompleteReason()}, nil
	})
	if err != nil {
		return fail(err)
	}
	if !tcov.complete {
		fmt.Printf("terminated: closed %d connection(s), INCOMPLETE: missing %s: sessions there may still be open\n", closed, tcov)
		return 3
	}
	fmt.Printf("terminated: closed %d connection(s), kept %d, complete\n", closed, len(keep))
	if !cov.complete {
		return 3
	}
	return 0
}

func fail(err error) int {
	s := status.Convert(err)
	fmt.Fprintf(os.Stderr, "error: %s: %s\n", statusName(s.Code().String()), s.Message())
	return 1
}

// statusName turns Go's "DeadlineExceeded" into the canonical DEADLINE_EXCEEDED.
func statusName(goName string) string {
	var b strings.Builder
	for i, r := range goName {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() { os.Exit(run()) }
