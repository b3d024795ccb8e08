package publish

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// sessionStore is paho's Store: a FileStore (StateDir/mqtt/paho) for the
// session state paho must keep across restarts (inbound QoS 1 commands not
// yet acknowledged, SUBSCRIBE and PUBREL packets), and memory for outbound
// PUBLISH packets, which the outbox already keeps on disk: writing each
// message a second time, as a file of its own, would make QoS 1 publishing
// about fifteen times slower for no gain in durability.
//
// The sender relies on one fact of paho here: the PUBLISH stays in the
// store until its PUBACK arrives (paho deletes it before completing the
// token), whereas a token that paho completes after a reconnect, when it
// resends the message from the store, leaves it there. See acked.
//
// The store also turns the FileStore's panics on I/O errors (a full disk, a
// vanished directory) into logged errors, and drops availability messages
// left from an earlier run when opened: an "online" or "offline" replayed
// after the new connection's "online" would state the wrong thing.
type sessionStore struct {
	file  mqtt.Store
	log   *slog.Logger
	avail string

	mu  sync.Mutex
	mem map[string]packets.ControlPacket
}

var _ mqtt.Store = (*sessionStore)(nil)

func newSessionStore(dir string, log *slog.Logger, avail string) *sessionStore {
	return &sessionStore{file: mqtt.NewFileStore(dir), log: log, avail: avail, mem: map[string]packets.ControlPacket{}}
}

func (s *sessionStore) guard(op, key string) {
	if r := recover(); r != nil {
		s.log.Error("mqtt: session store failed", "op", op, "key", key, "err", fmt.Sprint(r))
	}
}

// inMemory reports whether a packet stored under key is kept in memory.
func inMemory(key string, m packets.ControlPacket) bool {
	_, pub := m.(*packets.PublishPacket)
	return pub && strings.HasPrefix(key, "o.")
}

// Open opens the file store and removes stale availability messages.
func (s *sessionStore) Open() {
	defer s.guard("open", "")
	s.file.Open()
	for _, key := range s.file.All() {
		if !strings.HasPrefix(key, "o.") {
			continue
		}
		if p, ok := s.fileGet(key).(*packets.PublishPacket); ok && p.TopicName == s.avail {
			s.fileDel(key)
		}
	}
}

// Put stores a packet, replacing what was stored under key.
func (s *sessionStore) Put(key string, m packets.ControlPacket) {
	if inMemory(key, m) {
		cp := *m.(*packets.PublishPacket)
		s.mu.Lock()
		s.mem[key] = &cp
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	delete(s.mem, key) // a PUBREL replaces its PUBLISH
	s.mu.Unlock()
	defer s.guard("put", key)
	s.file.Put(key, m)
}

// Get returns a stored packet, or nil.
func (s *sessionStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	m, ok := s.mem[key]
	s.mu.Unlock()
	if ok {
		// A copy, like the file store's: paho sets the DUP flag on what
		// Get returns while its writer may still hold the earlier packet.
		cp := *m.(*packets.PublishPacket)
		return &cp
	}
	return s.fileGet(key)
}

func (s *sessionStore) fileGet(key string) (m packets.ControlPacket) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("mqtt: session store entry unreadable, deleting it", "key", key, "err", fmt.Sprint(r))
			m = nil
			s.fileDel(key)
		}
	}()
	return s.file.Get(key)
}

// All returns the stored keys: the file store's, then the memory's.
func (s *sessionStore) All() []string {
	keys := s.fileAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.mem {
		keys = append(keys, k)
	}
	return keys
}

func (s *sessionStore) fileAll() []string {
	defer s.guard("all", "")
	return s.file.All()
}

// Del deletes a stored packet.
func (s *sessionStore) Del(key string) {
	s.mu.Lock()
	_, ok := s.mem[key]
	delete(s.mem, key)
	s.mu.Unlock()
	if !ok {
		s.fileDel(key)
	}
}

func (s *sessionStore) fileDel(key string) {
	defer s.guard("del", key)
	s.file.Del(key)
}

// Close closes the file store. The memory part stays: paho reopens the
// store on the next connection, and resends what it holds.
func (s *sessionStore) Close() {
	defer s.guard("close", "")
	s.file.Close()
}

// Reset deletes every stored packet.
func (s *sessionStore) Reset() {
	s.mu.Lock()
	clear(s.mem)
	s.mu.Unlock()
	defer s.guard("reset", "")
	s.file.Reset()
}

// acked reports whether the outbound PUBLISH with message id is no longer
// held in memory, that is, whether the broker acknowledged it (PUBACK, or
// PUBREC then PUBCOMP) rather than paho completing its token on a resend.
func (s *sessionStore) acked(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, held := s.mem[fmt.Sprintf("o.%d", id)]
	return !held
}
