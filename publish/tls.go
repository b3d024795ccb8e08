package publish

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// tlsConfig builds the TLS configuration from CAFile, CertFile and KeyFile.
// It returns nil when none of them is set and InsecureTLS is off. Errors
// name the file at fault.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" && !c.InsecureTLS {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureTLS}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.ca_file %s: no PEM certificate found", c.CAFile)
		}
		t.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		return nil, fmt.Errorf("mqtt.cert_file %s is set but mqtt.key_file is not", c.CertFile)
	case c.CertFile == "" && c.KeyFile != "":
		return nil, fmt.Errorf("mqtt.key_file %s is set but mqtt.cert_file is not", c.KeyFile)
	case c.CertFile != "":
		if _, err := os.Stat(c.CertFile); err != nil {
			return nil, fmt.Errorf("mqtt.cert_file: %w", err)
		}
		if _, err := os.Stat(c.KeyFile); err != nil {
			return nil, fmt.Errorf("mqtt.key_file: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.cert_file %s / mqtt.key_file %s: %w", c.CertFile, c.KeyFile, err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// isTLSScheme reports whether a broker URL scheme uses TLS in paho.
func isTLSScheme(scheme string) bool {
	switch scheme {
	case "ssl", "tls", "mqtts", "tcps", "wss":
		return true
	}
	return false
}

// checkBrokerURL validates the broker URL and its agreement with the TLS
// settings.
func checkBrokerURL(broker string, tlsSet bool) error {
	u, err := url.Parse(broker)
	if err != nil {
		return fmt.Errorf("mqtt.broker %q: %w", broker, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ws", "unix":
	case "ssl", "tls", "mqtts", "tcps", "wss":
	default:
		return fmt.Errorf("mqtt.broker %q: scheme must be tcp, ssl, ws or wss (or the word embedded)", broker)
	}
	if u.Scheme != "unix" && u.Host == "" {
		return fmt.Errorf("mqtt.broker %q: no host", broker)
	}
	if tlsSet && !isTLSScheme(u.Scheme) {
		return fmt.Errorf("mqtt.broker %q: TLS files are set but the scheme %s:// is not TLS (use ssl:// or wss://)", broker, u.Scheme)
	}
	return nil
}

// readPassword reads the password file; a trailing newline is trimmed.
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("mqtt.password_file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", errors.New("mqtt.password_file " + path + ": empty")
	}
	return pw, nil
}
