package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/internal/sdnotify"
)

// systemd integration: Type=notify readiness (READY=1 once the export,
// device or mount is up; STOPPING=1 at shutdown; STATUS= lines) and socket
// activation for serve. Outside systemd all of it does nothing.

// notify sends sd_notify state lines, logging (not failing) on error: a
// service manager that stopped listening must not stop the service.
func notify(log *logrus.Entry, state ...string) {
	if err := sdnotify.Notify(state...); err != nil {
		log.WithError(err).Warn("cannot notify the service manager")
	}
}

func notifyReady(log *logrus.Entry, status string) {
	notify(log, "READY=1", "STATUS="+status)
}

func notifyStopping(log *logrus.Entry, status string) {
	notify(log, "STOPPING=1", "STATUS="+status)
}

// serveListener returns the socket systemd passed (LISTEN_FDS, a
// lunbridge-serve@.socket unit) when there is one, else the listener
// --listen names (serveListen).
func serveListener(spec, name string, log *logrus.Entry) (net.Listener, *serveEndpoint, func(), error) {
	nop := func() {}
	ls, err := sdnotify.Listeners()
	switch {
	case errors.Is(err, sdnotify.ErrNoListenFDs):
		return serveListen(spec, name, log)
	case err != nil:
		return nil, nil, nop, fmt.Errorf("serve: socket activation: %w", err)
	}
	if len(ls) != 1 {
		for _, l := range ls {
			l.Close()
		}
		return nil, nil, nop, fmt.Errorf("serve: socket activation passed %d sockets; want one (one ListenStream= in the .socket unit)", len(ls))
	}
	l := ls[0]
	if spec != "" {
		log.Infof("socket-activated: listening on the socket systemd passed, not --listen %s", spec)
	}
	switch a := l.Addr().(type) {
	case *net.UnixAddr:
		u := url.URL{Scheme: "nbd+unix", Path: "/" + name, RawQuery: "socket=" + a.Name}
		return l, &serveEndpoint{URI: u.String(), Socket: a.Name}, nop, nil
	case *net.TCPAddr:
		log.Warnf("listening on %s: NBD has no authentication; anyone who can reach it can read and write the LUN", a)
		return l, &serveEndpoint{URI: "nbd://" + a.String() + "/" + name, Address: a.String()}, nop, nil
	default:
		l.Close()
		return nil, nil, nop, fmt.Errorf("serve: socket activation passed a %s socket; want a Unix or TCP stream socket", l.Addr().Network())
	}
}
