package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// CommandHandler carries out a validated command. Its result (or error) is
// published on Topics.CommandResult. Commands run one at a time, off paho's
// goroutines, with a context that ends when the publisher closes; a long job
// (a fine-tune) should be started and reported on Topics.FinetuneStatus
// rather than awaited.
type CommandHandler func(ctx context.Context, cmd Command) (result any, err error)

// Options are the parts of a Publisher that do not come from the TOML file.
type Options struct {
	Logger   *slog.Logger     // slog.Default when nil
	DeviceID string           // required unless Config.Prefix and Config.ClientID are both set
	Clock    func() time.Time // time of the payloads' ts; time.Now when nil
	// DataDir is the directory that the paths of a finetune command must
	// stay inside (see ParseCommand). Empty refuses finetune commands.
	DataDir string
	// OnCommand handles valid commands; see also SetCommandHandler. Without
	// a handler, valid commands are answered with an error.
	OnCommand CommandHandler
}

// Stats are the publisher's counters.
type Stats struct {
	Connected     bool   // the connection to the broker is up
	QueueDepth    int    // QoS 0 messages waiting in memory
	OutboxRecords int    // QoS 1 messages not yet acknowledged by the broker
	OutboxBytes   int64  // their size on disk
	InFlight      int    // QoS 1 messages sent and awaiting their PUBACK
	Sent          uint64 // QoS 0 messages sent plus QoS 1 messages acknowledged (this run)
	DroppedQoS0   uint64 // QoS 0 messages dropped because the queue was full
	DroppedQoS1   uint64 // QoS 1 messages dropped because the outbox was full
	Reconnects    uint64 // connections made after the first one
}

// ErrClosed is returned by the Publish methods after Close.
var ErrClosed = errors.New("publisher closed")

// Publisher sends the agent's messages to the broker. Its Publish methods
// never block on the broker: QoS 0 messages go to a bounded queue in memory
// (the oldest dropped when full), QoS 1 messages to the on-disk outbox (the
// oldest dropped when its byte bound is reached), and a sender goroutine
// drains both while connected, with a window of QoS 1 messages in flight.
// QoS 1 messages stay in the outbox until the broker acknowledges them, so
// they survive broker outages and agent restarts, SIGKILL included; they are
// delivered at least once, possibly more than once and out of order after an
// outage (consumers deduplicate by topic and seq, see Header).
//
// Availability: the last will publishes a retained "offline" at QoS 1 when
// the connection dies; each (re)connection publishes a retained "online";
// Close publishes a retained "offline".
type Publisher struct {
	cfg     Config
	log     *slog.Logger
	device  string
	clock   func() time.Time
	dataDir string
	topics  Topics
	tls     bool
	opts    *mqtt.ClientOptions
	store   *sessionStore

	outbox *outbox
	seqs   *seqStore
	q0     *memQueue
	wake   chan struct{}
	cmds   chan mqtt.Message

	handler atomic.Pointer[CommandHandler]

	sent, droppedQoS0, droppedQoS1 atomic.Uint64
	connects                       atomic.Uint64
	inflight                       atomic.Int64
	rewinds                        atomic.Uint64 // times the sender went back to resend

	mu      sync.Mutex // guards the fields below
	client  mqtt.Client
	broker  *EmbeddedBroker
	started bool
	closed  bool
	runCtx  context.Context // the workers' context, set by Start
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Tuning of the sender and the connection.
const (
	sendWindow           = 128              // QoS 1 messages in flight
	qos0Batch            = 64               // QoS 0 messages sent between checks of the outbox
	ackTimeout           = 60 * time.Second // resend when a PUBACK takes longer while connected
	syncInterval         = 250 * time.Millisecond
	connectRetryInterval = 2 * time.Second
	maxReconnectInterval = 10 * time.Second
	cmdQueue             = 32
)

// New prepares a publisher: it checks the configuration, reads the password
// and TLS files, and opens the outbox in cfg.StateDir/mqtt (re-sending
// what a previous run left there once started). It does not connect: see
// Start. Messages published before Start are queued.
func New(cfg Config, opts Options) (*Publisher, error) {
	cfg = cfg.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "mqtt")
	if cfg.StateDir == "" {
		return nil, errors.New("mqtt: no state directory (Config.StateDir)")
	}
	if cfg.QoS > 1 {
		return nil, fmt.Errorf("mqtt.qos must be 0 or 1, not %d", cfg.QoS)
	}
	if opts.DeviceID == "" && (cfg.Prefix == "" || cfg.ClientID == "") {
		return nil, errors.New("mqtt: no device id to derive the prefix and client id from")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "yolo7d/" + opts.DeviceID
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "yolo7d-" + opts.DeviceID
	}
	p := &Publisher{
		cfg:     cfg,
		log:     log,
		device:  opts.DeviceID,
		clock:   opts.Clock,
		dataDir: opts.DataDir,
		topics:  NewTopics(cfg.Prefix),
		q0:      newMemQueue(cfg.QueueSize),
		wake:    make(chan struct{}, 1),
		cmds:    make(chan mqtt.Message, cmdQueue),
	}
	if p.clock == nil {
		p.clock = time.Now
	}
	if opts.OnCommand != nil {
		p.SetCommandHandler(opts.OnCommand)
	}
	if err := p.buildOptions(); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.StateDir, "mqtt")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mqtt: state directory: %w", err)
	}
	var err error
	if p.seqs, err = openSeqStore(filepath.Join(dir, "seq.json"), log); err != nil {
		return nil, err
	}
	if p.outbox, err = openOutbox(filepath.Join(dir, "outbox"), cfg.OutboxMaxBytes, log); err != nil {
		return nil, err
	}
	return p, nil
}

// buildOptions makes paho's options, all but the broker URL of an embedded
// broker (known only once it listens).
func (p *Publisher) buildOptions() error {
	cfg := p.cfg
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	if cfg.Broker != "embedded" {
		if err := checkBrokerURL(cfg.Broker, tlsCfg != nil); err != nil {
			return err
		}
	}
	p.store = newSessionStore(filepath.Join(cfg.StateDir, "mqtt", "paho"), p.log, p.topics.Availability())
	o := mqtt.NewClientOptions().
		SetClientID(cfg.ClientID).
		SetCleanSession(false).
		SetStore(p.store).
		SetOrderMatters(false).
		SetConnectRetry(true).
		SetConnectRetryInterval(connectRetryInterval).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(maxReconnectInterval).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWill(p.topics.Availability(), "offline", 1, true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			p.log.Debug("unexpected message", "topic", m.Topic())
		}).
		SetOnConnectHandler(p.onConnect).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			p.log.Warn("connection to the broker lost; reconnecting", "err", err)
		})
	if cfg.Broker != "embedded" {
		o.AddBroker(cfg.Broker)
	}
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
	}
	if cfg.PasswordFile != "" {
		pw, err := readPassword(cfg.PasswordFile)
		if err != nil {
			return err
		}
		o.SetPassword(pw)
	}
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	p.opts = o
	p.tls = tlsCfg != nil
	return nil
}

// Topics returns the publisher's topic tree.
func (p *Publisher) Topics() Topics { return p.topics }

// SetCommandHandler sets (or, with nil, removes) the handler of valid
// commands.
func (p *Publisher) SetCommandHandler(h CommandHandler) {
	if h == nil {
		p.handler.Store(nil)
		return
	}
	p.handler.Store(&h)
}

// Start connects in the background and returns at once: the connection is
// retried until it succeeds, and re-established when lost. With Broker
// "embedded" it first starts the embedded broker on EmbeddedListen, which
// can fail (address in use). The publisher runs until Close or until ctx
// ends (then call Close to flush).
func (p *Publisher) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return ErrClosed
	case p.started:
		return errors.New("mqtt: publisher already started")
	}
	if p.cfg.Broker == "embedded" {
		b, err := StartEmbeddedBroker(p.cfg.EmbeddedListen, p.log)
		if err != nil {
			return err
		}
		p.broker = b
		p.opts.AddBroker(b.URL())
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	p.runCtx = ctx
	p.client = mqtt.NewClient(p.opts)
	tok := p.client.Connect()
	p.wg.Add(4)
	go func() {
		defer p.wg.Done()
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				p.log.Error("cannot connect to the broker", "broker", p.opts.Servers, "err", err)
			}
		case <-ctx.Done():
		}
	}()
	go func() { defer p.wg.Done(); p.sendLoop(ctx) }()
	go func() { defer p.wg.Done(); p.syncLoop(ctx) }()
	go func() { defer p.wg.Done(); p.commandLoop(ctx) }()
	return nil
}

// onConnect runs on every (re)connection, in its own goroutine.
func (p *Publisher) onConnect(c mqtt.Client) {
	if p.connects.Add(1) > 1 {
		p.log.Info("reconnected to the broker")
	} else {
		p.log.Info("connected to the broker")
	}
	c.Publish(p.topics.Availability(), 1, true, "online")
	tok := c.Subscribe(p.topics.Commands(), 1, p.onCommand)
	go func() {
		if tok.WaitTimeout(p.cfg.ConnectTimeout) && tok.Error() != nil {
			p.log.Error("cannot subscribe to commands", "topic", p.topics.Commands(), "err", tok.Error())
		}
	}()
	p.kick()
}

// kick wakes the sender.
func (p *Publisher) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Connected reports whether the connection to the broker is up.
func (p *Publisher) Connected() bool {
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	return c != nil && c.IsConnectionOpen()
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	records, bytes := p.outbox.counts()
	n := p.connects.Load()
	return Stats{
		Connected:     p.Connected(),
		QueueDepth:    p.q0.len(),
		OutboxRecords: records,
		OutboxBytes:   bytes,
		InFlight:      int(p.inflight.Load()),
		Sent:          p.sent.Load(),
		DroppedQoS0:   p.droppedQoS0.Load(),
		DroppedQoS1:   p.droppedQoS1.Load(),
		Reconnects:    max(n, 1) - 1,
	}
}

// PublishJSON enqueues payload, marshalled to JSON, on topic. If payload
// embeds Header (implements Stamper), its v, seq and ts are set first. It
// never blocks on the broker; it fails only for a payload that cannot be
// marshalled or stored, or after Close.
func (p *Publisher) PublishJSON(topic string, qos byte, retain bool, payload any) error {
	if s, ok := payload.(Stamper); ok {
		s.Stamp(p.seqs.next(topic), p.clock())
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("mqtt: marshal payload for %s: %w", topic, err)
	}
	return p.PublishRaw(topic, qos, retain, b)
}

// PublishRaw enqueues payload as is on topic: QoS 0 in memory, QoS 1 and 2
// in the outbox. It never blocks on the broker. A QoS 0 payload is kept
// until sent, so the caller must not modify it afterwards.
func (p *Publisher) PublishRaw(topic string, qos byte, retain bool, payload []byte) error {
	if topic == "" {
		return errors.New("mqtt: empty topic")
	}
	if qos > 2 {
		return fmt.Errorf("mqtt: bad QoS %d for %s", qos, topic)
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if qos == 0 {
		if p.q0.push(message{topic: topic, retain: retain, payload: payload}) {
			p.droppedQoS0.Add(1)
		}
	} else {
		dropped, err := p.outbox.append(topic, qos, retain, payload)
		if dropped > 0 {
			p.droppedQoS1.Add(uint64(dropped))
		}
		if err != nil {
			if errors.Is(err, errOutboxClosed) {
				return ErrClosed
			}
			p.droppedQoS1.Add(1)
			return fmt.Errorf("mqtt: %s: %w", topic, err)
		}
	}
	p.kick()
	return nil
}

// PublishDetections publishes a frame's detections with the configured QoS
// and retain flag. Device is filled in when empty.
func (p *Publisher) PublishDetections(d *DetectionsPayload) error {
	if d.Device == "" {
		d.Device = p.device
	}
	if d.Detections == nil {
		d.Detections = []Detection{}
	}
	return p.PublishJSON(p.topics.Detections(d.Camera), p.cfg.QoS, p.cfg.Retain, d)
}

// PublishState publishes a camera's state, retained, at QoS 1.
func (p *Publisher) PublishState(s *StatePayload) error {
	if s.Device == "" {
		s.Device = p.device
	}
	return p.PublishJSON(p.topics.State(s.Camera), 1, true, s)
}

// PublishStats fills the MQTT figures of s from Stats and publishes it,
// retained, at QoS 1.
func (p *Publisher) PublishStats(s *StatsPayload) error {
	if s.Device == "" {
		s.Device = p.device
	}
	st := p.Stats()
	s.QueueDepth, s.OutboxRecords, s.OutboxBytes = st.QueueDepth, st.OutboxRecords, st.OutboxBytes
	s.DroppedQoS0, s.DroppedQoS1, s.Sent = st.DroppedQoS0, st.DroppedQoS1, st.Sent
	s.Reconnects, s.Connected = st.Reconnects, st.Connected
	return p.PublishJSON(p.topics.Stats(), 1, true, s)
}

// PublishSnapshot publishes a JPEG, retained, at QoS 1, followed by its
// SnapshotMetaPayload.
func (p *Publisher) PublishSnapshot(camera string, frame uint64, jpeg []byte) error {
	if err := p.PublishRaw(p.topics.Snapshot(camera), 1, true, jpeg); err != nil {
		return err
	}
	return p.PublishJSON(p.topics.SnapshotMeta(camera), 1, true, &SnapshotMetaPayload{
		Device: p.device, Camera: camera, Frame: frame, Bytes: len(jpeg), ContentType: "image/jpeg",
	})
}

// PublishCommandResult publishes a command's outcome at QoS 1.
func (p *Publisher) PublishCommandResult(r *CommandResultPayload) error {
	return p.PublishJSON(p.topics.CommandResult(), 1, false, r)
}

// Close shuts the publisher down within ctx: while connected it lets the
// sender drain what is queued, publishes a retained "offline", disconnects,
// stops its goroutines (and the embedded broker), and fsyncs the outbox.
// QoS 1 messages not acknowledged by then stay in the outbox for the next
// run; QoS 0 messages still queued are lost.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	client, started, runCtx := p.client, p.started, p.runCtx
	p.mu.Unlock()

	if started {
		// Drain while the connection is up.
		for client.IsConnectionOpen() && !p.drained() && ctx.Err() == nil && runCtx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		if client.IsConnectionOpen() {
			done := make(chan struct{})
			go func() {
				defer close(done)
				tok := client.Publish(p.topics.Availability(), 1, true, "offline")
				select {
				case <-tok.Done():
				case <-ctx.Done():
				}
			}()
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
		client.Disconnect(250)
		p.cancel()
		done := make(chan struct{})
		go func() { p.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			p.log.Warn("mqtt: goroutines still busy at close", "err", ctx.Err())
		}
	}
	var errs []error
	if err := p.outbox.close(); err != nil {
		errs = append(errs, err)
	}
	if p.broker != nil {
		if err := p.broker.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// drained reports whether every queued message was sent (QoS 0) or
// acknowledged (QoS 1).
func (p *Publisher) drained() bool {
	records, _ := p.outbox.counts()
	return records == 0 && p.q0.len() == 0
}
