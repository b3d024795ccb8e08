package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// inflightMsg is a QoS 1 message handed to paho and not yet acknowledged.
type inflightMsg struct {
	index uint64
	tok   mqtt.Token
	sent  time.Time
}

// sendLoop drains the outbox and the QoS 0 queue while connected. QoS 1
// messages are sent in outbox order with up to sendWindow in flight; a
// message is acknowledged in the outbox when its paho token completes
// because the broker acknowledged it (see sessionStore.acked: paho also
// completes tokens when it resends stored messages after a reconnect). A
// token that fails, completes without an acknowledgement, or waits longer
// than ackTimeout makes the sender rewind to the oldest unacknowledged
// message and send again: duplicates are allowed, losses are not.
func (p *Publisher) sendLoop(ctx context.Context) {
	var inflight []inflightMsg
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	rewind := func(why string, err error) {
		p.log.Debug("resending unacknowledged messages", "why", why, "err", err, "in_flight", len(inflight))
		p.rewinds.Add(1)
		p.outbox.rewind()
		clear(inflight)
		inflight = inflight[:0]
		p.inflight.Store(0)
	}
	for {
		more := false
		if p.client.IsConnectionOpen() {
			for len(inflight) < sendWindow {
				r, ok, err := p.outbox.next()
				if err != nil || !ok {
					break
				}
				tok := p.client.Publish(r.topic, r.qos, r.retain, r.payload)
				inflight = append(inflight, inflightMsg{index: r.index, tok: tok, sent: time.Now()})
			}
			p.inflight.Store(int64(len(inflight)))
			for i := 0; i < qos0Batch; i++ {
				m, ok := p.q0.pop()
				if !ok {
					break
				}
				tok := p.client.Publish(m.topic, 0, m.retain, m.payload)
				if tok.Error() == nil {
					p.sent.Add(1)
				}
			}
			more = p.q0.len() > 0 || (len(inflight) < sendWindow && p.outbox.hasUnsent())
		}

		var acked <-chan struct{}
		if len(inflight) > 0 {
			acked = inflight[0].tok.Done()
		}
		if more {
			select {
			case <-ctx.Done():
				return
			default:
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			case <-acked:
			case <-tick.C:
				if len(inflight) > 0 && time.Since(inflight[0].sent) > ackTimeout && p.client.IsConnectionOpen() {
					rewind("acknowledgement timeout", nil)
				}
			}
		}

		// Collect the completed tokens at the head of the window.
		for len(inflight) > 0 {
			m := inflight[0]
			select {
			case <-m.tok.Done():
			default:
				m.tok = nil
			}
			if m.tok == nil {
				break
			}
			if err := m.tok.Error(); err != nil {
				rewind("publish failed", err)
				break
			}
			if pt, ok := m.tok.(*mqtt.PublishToken); ok && !p.store.acked(pt.MessageID()) {
				// Completed by paho resending it after a reconnect, not by
				// the broker: send it (and the rest of the window) again.
				rewind("token completed without an acknowledgement", nil)
				break
			}
			if p.outbox.ack(m.index) {
				p.sent.Add(1)
			}
			inflight[0] = inflightMsg{}
			inflight = inflight[1:]
		}
		p.inflight.Store(int64(len(inflight)))
	}
}

// syncLoop fsyncs the outbox and saves its cursor every syncInterval.
func (p *Publisher) syncLoop(ctx context.Context) {
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.outbox.sync()
		switch {
		case errors.Is(err, errOutboxClosed):
			return
		case err != nil && !failing:
			p.log.Error("outbox sync failed", "err", err)
		case err == nil && failing:
			p.log.Info("outbox sync works again")
		}
		failing = err != nil
	}
}

// onCommand is paho's handler of "<p>/cmd/+". It must not block: it hands
// the message to commandLoop, or refuses it when too many are waiting.
func (p *Publisher) onCommand(_ mqtt.Client, m mqtt.Message) {
	name, ok := p.topics.commandName(m.Topic())
	if !ok || name == resultName {
		return
	}
	if m.Retained() {
		// A retained command would run again on every subscription.
		p.log.Warn("ignoring a retained command; publish commands without the retain flag", "topic", m.Topic())
		return
	}
	select {
	case p.cmds <- m:
	default:
		cmd, _ := ParseCommand(name, m.Payload(), p.dataDir)
		p.reply(cmd, nil, errors.New("busy: too many commands waiting"))
	}
}

// commandLoop validates and runs the commands one at a time.
func (p *Publisher) commandLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-p.cmds:
			name, _ := p.topics.commandName(m.Topic())
			cmd, err := ParseCommand(name, m.Payload(), p.dataDir)
			if err != nil {
				p.log.Warn("command refused", "topic", m.Topic(), "id", cmd.ID, "err", err)
				p.reply(cmd, nil, err)
				continue
			}
			h := p.handler.Load()
			if h == nil {
				p.reply(cmd, nil, errors.New("no command handler"))
				continue
			}
			p.log.Info("command", "name", cmd.Name, "id", cmd.ID)
			res, err := runHandler(ctx, *h, cmd)
			p.reply(cmd, res, err)
		}
	}
}

// runHandler calls h, turning a panic into an error.
func runHandler(ctx context.Context, h CommandHandler, cmd Command) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("command handler panicked: %v", r)
		}
	}()
	return h(ctx, cmd)
}

// reply publishes a command's outcome on the result topic.
func (p *Publisher) reply(cmd Command, res any, err error) {
	r := &CommandResultPayload{ID: cmd.ID, Command: cmd.Name, OK: err == nil, Result: res}
	if err != nil {
		r.Error = strings.TrimSpace(err.Error())
		r.Result = nil
	}
	if perr := p.PublishCommandResult(r); perr != nil && !errors.Is(perr, ErrClosed) {
		p.log.Error("cannot publish a command result", "id", cmd.ID, "err", perr)
	}
}
