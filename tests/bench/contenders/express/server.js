// The provider documentation's Express receiver, as documented, except that it binds
// 127.0.0.1 on the port given (argv[2]) instead of every address on port 3000.
const express = require('express');
const app = express();
app.use(express.json());

app.post('/extend-music-callback', (req, res) => {
  const { code, msg, data } = req.body;

  console.log('Received music extension callback:', {
    taskId: data.task_id,
    callbackType: data.callbackType,
    status: code,
    message: msg
  });

  if (code === 200) {
    // Task completed successfully
    console.log('Music extension completed');
    const musicData = data.data || [];

    console.log(`Extended ${musicData.length} music tracks:`);
    musicData.forEach((music, index) => {
      console.log(`Music ${index + 1}:`);
      console.log(`  Title: ${music.title}`);
      console.log(`  Duration: ${music.duration} seconds`);
      console.log(`  Audio URL: ${music.audio_url}`);
      console.log(`  Cover URL: ${music.image_url}`);
    });
  } else {
    // Task failed
    console.log('Music extension failed:', msg);
    if (code === 400) {
      console.log('Parameter error or content violation');
    } else if (code === 451) {
      console.log('File download failed');
    } else if (code === 500) {
      console.log('Server internal error');
    }
  }

  // Return 200 status code to confirm callback received
  res.status(200).json({ status: 'received' });
});

const port = Number(process.argv[2] || 3000);
app.listen(port, '127.0.0.1', () => {
  console.log(`Callback server running on port ${port}`);
});
