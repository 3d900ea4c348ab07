package main

// Every control replica behind one DNS name (a headless Service), balanced
// round robin over those that answer their gRPC health check with SERVING:
// a replica that is down, not ready yet or stopping (it says NOT_SERVING
// for control.shutdown_delay_ms before it stops taking calls) gets no call,
// so a replica lost or restarted fails no request here. The name is looked
// up again every few seconds and whenever gRPC asks (a connection failed):
// new replicas are used as soon as they are in DNS and serving.

import (
	"context"
	"net"
	"sort"
	"strings"
	"time"

	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/resolver"
)

const replicasScheme = "switchboard-replicas"

const replicasServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}`

type replicasBuilder struct{ every time.Duration }

func (b replicasBuilder) Scheme() string { return replicasScheme }

func (b replicasBuilder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	host, port, err := net.SplitHostPort(t.Endpoint)
	if err != nil {
		return nil, err
	}
	r := &replicasResolver{host: host, port: port, cc: cc, every: b.every, now: make(chan struct{}, 1),
		done: make(chan struct{})}
	go r.run()
	return r, nil
}

type replicasResolver struct {
	host, port string
	cc         resolver.ClientConn
	every      time.Duration
	now        chan struct{}
	done       chan struct{}
}

func (r *replicasResolver) run() {
	ticker := time.NewTicker(r.every)
	defer ticker.Stop()
	last := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, r.host)
		cancel()
		switch {
		case err != nil:
			r.cc.ReportError(err)
		case len(addrs) > 0:
			sort.Strings(addrs)
			if key := strings.Join(addrs, ","); key != last {
				state := resolver.State{ServiceConfig: r.cc.ParseServiceConfig(replicasServiceConfig)}
				for _, a := range addrs {
					state.Addresses = append(state.Addresses, resolver.Address{Addr: net.JoinHostPort(a, r.port)})
				}
				r.cc.UpdateState(state)
				last = key
			}
		}
		select {
		case <-r.done:
			return
		case <-ticker.C:
		case <-r.now:
		}
	}
}

func (r *replicasResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

func (r *replicasResolver) Close() { close(r.done) }
