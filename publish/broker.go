package publish

import (
	"fmt"
	"log/slog"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// EmbeddedBroker is an in-process MQTT broker (mochi-mqtt) for setups
// without one: Config.Broker = "embedded". It allows every client (no
// authentication) and keeps sessions and retained messages in memory only,
// so bind it to loopback unless the network is trusted; the agent's own
// QoS 1 messages are still kept by its outbox across restarts.
type EmbeddedBroker struct {
	srv *mochi.Server
	tcp *listeners.TCP
}

// StartEmbeddedBroker starts a broker listening on addr (host:port; port 0
// picks a free one, see Addr). The broker logs through logger (slog.Default
// when nil).
func StartEmbeddedBroker(addr string, logger *slog.Logger) (*EmbeddedBroker, error) {
	if logger == nil {
		logger = slog.Default()
	}
	log := logger.With("component", "mqtt-broker")
	srv := mochi.New(&mochi.Options{Logger: log})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	b := &EmbeddedBroker{srv: srv, tcp: tcp}
	if host, _, err := net.SplitHostPort(b.Addr()); err == nil {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			log.Warn("embedded broker accepts any client without authentication and listens beyond loopback", "addr", b.Addr())
		}
	}
	return b, nil
}

// Addr returns the address the broker listens on, with the real port when
// it was started on port 0.
func (b *EmbeddedBroker) Addr() string { return b.tcp.Address() }

// URL returns the broker's address as a paho broker URL (tcp://host:port).
func (b *EmbeddedBroker) URL() string { return "tcp://" + b.Addr() }

// Close stops the broker and closes its clients' connections.
func (b *EmbeddedBroker) Close() error {
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	return nil
}
