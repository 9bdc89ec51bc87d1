// Status changes over the notifications WebSocket, through the edge. Browsers cannot set
// headers on a WebSocket: the token goes in the route's documented access_token parameter.
// Reconnects with exponential back-off and jitter; every (re)connect calls onOpen, so the
// page refills what it missed from history.
import { accessToken } from "./auth.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export function connectLive({ onMessage, onOpen, onState }) {
  let socket = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;

  function open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = encodeURIComponent(accessToken() ?? "");
    socket = new WebSocket(`${scheme}://${location.host}/notifications/ws?access_token=${token}`);
    socket.addEventListener("open", () => {
      attempt = 0;
      onState("live");
      onOpen();
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      onMessage(message);
    });
    socket.addEventListener("close", () => {
      if (stopped) return;
      onState("reconnecting");
      const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt += 1;
      timer = setTimeout(open, delay);
    });
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    socket?.close();
  };
}
