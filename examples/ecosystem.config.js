// PM2's configuration for examples/pm2-app.js (README "Deploying"): two workers in
// cluster mode on one port. `kill_timeout` leaves a worker time to drain (stop() waits
// for its sends in flight, up to requestTimeout); `wait_ready` starts the next worker's
// restart only once the new one has joined the cluster and listens.
module.exports = {
  apps: [
    {
      name: 'wa-gateway',
      script: './pm2-app.js',
      instances: 2,
      exec_mode: 'cluster',
      wait_ready: true,
      listen_timeout: 15000,
      kill_timeout: 40000,
      env: {
        PORT: 3000,
        REDIS_URL: 'redis://127.0.0.1:6379',
      },
    },
  ],
};
