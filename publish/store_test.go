package publish

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func publishPacket(topic string, id uint16) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = topic, 1, id, []byte("x")
	return p
}

func TestSessionStoreTellsAcknowledgedFromResent(t *testing.T) {
	dir := t.TempDir()
	s := newSessionStore(dir, discardLogger(), "p/availability")
	s.Open()
	s.Put("o.5", publishPacket("p/x", 5))
	if s.acked(5) {
		t.Fatal("a stored PUBLISH reported acknowledged")
	}
	if s.Get("o.5") == nil {
		t.Fatal("Get lost the PUBLISH")
	}
	s.Del("o.5") // paho does this on PUBACK
	if !s.acked(5) {
		t.Fatal("a deleted PUBLISH reported pending")
	}

	// Other packets go to the file store and survive a new store.
	sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sub.MessageID, sub.Topics, sub.Qoss = 7, []string{"p/cmd/+"}, []byte{1}
	s.Put("o.7", sub)
	s.Put("o.8", publishPacket("p/availability", 8))
	s.file.Put("o.9", publishPacket("p/availability", 9)) // as left by an earlier run
	s.Close()

	s = newSessionStore(dir, discardLogger(), "p/availability")
	s.Open()
	defer s.Close()
	if s.Get("o.7") == nil {
		t.Error("SUBSCRIBE not kept on disk")
	}
	if s.Get("o.9") != nil {
		t.Error("stale availability message not dropped at open")
	}
	if keys := s.All(); len(keys) != 1 {
		t.Errorf("keys %v, want only o.7", keys)
	}
}
