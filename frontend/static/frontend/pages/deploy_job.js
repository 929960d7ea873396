// A deploy job's page: the steps are one server-rendered region, refreshed whenever the worker reports on
// this job (`deploy.job` messages: a step started or finished, the job ended or was cancelled), and once
// when the socket first opens: the job may have moved on (or ended) since the page was rendered, and a
// finished job sends nothing more.
import { refreshOn } from "../live.js";

const jobId = Number(document.getElementById("deploy-job").dataset.job);
refreshOn(new Set(["deploy.job"]), { accept: (message) => message.job === jobId, catchUp: true });
