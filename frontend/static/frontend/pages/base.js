// Every page: times in the user's time zone, uptime counters ticking (live pages add their socket).
import { start } from "../live.js";

start();
